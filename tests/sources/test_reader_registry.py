"""The reader registry: one record per format, sniffing = the first reader that claims a file."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from stabdiag.cli import app
from stabdiag.sources import FORMATS, load, registry, runs, sniff, textlog
from stabdiag.sources.registry import READERS


def test_every_reader_is_one_complete_record():
    names = [r.name for r in READERS]
    assert len(names) == len(set(names)) == len(FORMATS)
    assert tuple(names) == FORMATS
    for r in READERS:
        assert r.name in r.family and r.family <= set(FORMATS), r.name
        assert r.example.strip() and callable(r.looks_like) and callable(r.read)
    # stdout formats, and only they, hand single files to the launcher layer
    assert {r.name for r in READERS if r.stdout} == set(registry.STDOUT_FORMATS)
    assert {"megatron", "deepspeed", "torchtitan"} <= set(registry.STDOUT_FORMATS)


def test_formats_command_lists_the_registry():
    out = CliRunner().invoke(app, ["formats"]).output
    for r in READERS:
        assert re.search(rf"(?m)^\s*{re.escape(r.name)}\s", out), r.name


def test_sniffing_is_the_first_reader_that_claims_the_file(tmp_path):
    v = tmp_path / "version_0"
    v.mkdir()
    files = {
        v / "metrics.csv": b"step,loss\n1,2.0\n",  # lightning-csv before csv
        tmp_path / "w.csv": b"Step,run1 - loss,run2 - loss\n1,2,3\n",
        tmp_path / "plain.csv": b"step,loss\n1,2.0\n",
        tmp_path / "trainer_state.json": b"{}",
        tmp_path / "steps.json": b'{"step": 1, "loss": 2.0}\n',
        tmp_path / "cfg.json": b'{"lr": 1}\n',
        tmp_path / "train.log": b"iter 1: loss 2.0, time 3ms\n",
        tmp_path / "notes.md": b"iter 1: loss 2.0, time 3ms\n",  # documentation, not a log
    }
    for p, data in files.items():
        p.write_bytes(data)
    for p in files:
        head = p.read_bytes()[: registry.HEAD_BYTES]
        claims = [r.name for r in READERS if r.looks_like(p, head)]
        got = sniff.sniff(p)
        if got is not None and got not in registry.STDOUT_FORMATS:
            assert got == claims[0], (p.name, claims)
    assert [sniff.sniff(p) for p in files] == [
        "lightning-csv",
        "wandb-csv",
        "csv",
        "hf-trainer-state",
        "jsonl",
        None,
        "nanogpt",
        None,
    ]


def test_a_torchrun_tee_prefix_does_not_hide_the_inner_format(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text(
        "".join(
            f"[rank{r}]:iter {i}: loss {2.0 - i / 100}, time 3ms\n"
            for i in range(5)
            for r in (0, 1)
        )
    )
    assert sniff.sniff(p) == "nanogpt"


def test_the_shared_text_sniffer_scans_past_the_head_only_for_plain_text(tmp_path):
    pattern = re.compile(rb"(?m)^MARK \d+")
    looks_like = textlog.sniffer(pattern)
    body = b"x" * (textlog.HEAD_BYTES + 10) + b"\nMARK 1\n"
    for name, deep in (("a.out", True), ("a.md", False), ("a.csv", False)):
        p = tmp_path / name
        p.write_bytes(body)
        assert looks_like(p, body[: textlog.HEAD_BYTES]) is deep, name
        assert looks_like(p, b"MARK 2\n")  # in the head: any suffix
        assert looks_like(p, "MARK 2\n")  # text heads are accepted too
    with_md = textlog.sniffer(pattern, deep=textlog.TEXT_SUFFIXES)
    assert with_md(tmp_path / "a.md", b"")


def test_generic_stems_take_their_folder_name_and_names_grow_only_to_be_unique(tmp_path):
    for d in ("a/exp1", "b/exp1", "c/solo"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "metrics.csv").write_text("step,loss\n1,2.0\n2,1.9\n3,1.8\n")
    (tmp_path / "b" / "exp1" / "run.json").write_text('{"seed": 3}')
    res = load([tmp_path])
    names = {r.name: r for r in res.runs}
    assert set(names) == {"a/exp1", "b/exp1", "solo"}
    assert names["b/exp1"].meta.get("seed") == 3
    planned = runs.plan([(tmp_path / "c" / "solo" / "metrics.csv", "csv")])
    assert [(g.fmt, g.name, g.anchor) for g in planned] == [("csv", "solo", tmp_path / "c")]


def test_keras_train_and_validation_dirs_plan_as_one_run(tmp_path: Path):
    files = []
    for sub in ("train", "validation"):
        (tmp_path / "k" / sub).mkdir(parents=True)
        files.append((tmp_path / "k" / sub / "events.out.tfevents.1", "tensorboard"))
    (g,) = runs.plan(files)
    assert g.path == tmp_path / "k" and g.extra == (files[1][0],) and g.split == ""
    (v,) = runs.plan(files[1:])
    assert v.split == "val"
