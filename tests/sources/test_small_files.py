"""The per-file shortcuts that make a tree of many small logs load fast (issue 13 R4) give
exactly what the general code gives, on generated adversarial inputs: the small-CSV path
against the row-by-row reader, the restart pre-check against the series-by-series search, the
cached directory listing against probing every configuration file, and the walk's real paths
against ``os.path.realpath``."""

from __future__ import annotations

import contextlib
import functools
import os
import random

import numpy as np
import pytest
from sources_util import assert_same_raw_runs

from stabdiag.errors import SourceError
from stabdiag.sources import aliases, configs, registry, restarts, sniff, textlog
from stabdiag.sources import csv as csv_reader

# --------------------------------------------------------------------------- small CSV files

NUMBER_CELLS = [
    "1",
    "-2",
    "0.5",
    " 1.5 ",
    "\t2.5",
    "1e-3",
    "1E5",
    "-0",
    "-0.0",
    "0",
    "4.9e-324",
    "1.7976931348623157e308",
    "0.1000000000000000055511151231257827",
    "1e400",
    "-1e400",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-Infinity",
    "+inf",
    "1_000",
    "\u0661",  # Arabic-Indic digit one: float() reads it
    "\u0663.\u0665",
    "\uff11",  # full-width 1
    "\x1c2",  # an information separator: whitespace to str.strip and float alike
    "2\x1f",
    "\u20031.5",  # em space
    "\u00a03",  # no-break space
    "7" * 5000,  # over the 4300-digit int() limit (float() has none)
]
ABSENT_CELLS = ["", " ", "null", "None", "NA", "n/a", "NULL"]
TEXT_CELLS = ["abc", "0x10", "1,5", "True", "1.2.3", "--1", "\u00e9", "inf inf", "1 2"]
STEP_CELLS = [
    "0",
    "1",
    "2",
    "17",
    " 4 ",
    "1.0",
    "1e3",
    "-3",
    "-0",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "1_0",
    "\u0662",
    "1.5",
    "inf",
    "nan",
    "",
    "x",
    "1e30",
]
STEP_NAMES = ["step", "Step", " step ", "global_step", "iteration", "iter", "_step"]
METRIC_NAMES = ["loss", "lr", "grad_norm", "val_loss", "Loss", "note", "train/loss"]
EXTRA_COLUMNS = ["wall_time", "timestamp", "rank", "run", "metric", "value", "", "loss"]


def _cell(rng: random.Random, clean: bool) -> str:
    r = rng.random()
    if clean or r < 0.7:
        return rng.choice(NUMBER_CELLS[:8]) if r < 0.5 else rng.choice(NUMBER_CELLS)
    return rng.choice(ABSENT_CELLS) if r < 0.9 else rng.choice(TEXT_CELLS)


def _small_csv(rng: random.Random) -> bytes:
    """A small CSV: mostly clean and wide (the shortcut's case), often with one kind of damage
    or an unusual layout (where it must step aside or agree)."""
    clean = rng.random() < 0.4
    header = [rng.choice(STEP_NAMES)] + rng.sample(METRIC_NAMES, rng.randint(0, 3))
    if rng.random() < 0.3:
        header.insert(rng.randint(0, len(header)), rng.choice(EXTRA_COLUMNS))
    rows = []
    for _ in range(rng.randint(0, 12)):
        cells = []
        for h in header:
            if h.strip().lower() in STEP_NAMES[:1] + ["global_step", "iteration", "iter", "_step"]:
                cells.append(rng.choice(STEP_CELLS[:9] if clean else STEP_CELLS))
            elif h in ("run", "metric"):
                cells.append(rng.choice(["a", "b", " a ", "", "loss", "01"]))
            elif h == "rank":
                cells.append(rng.choice(["0", "1", "x"]))
            else:
                cells.append(_cell(rng, clean))
        rows.append(cells)
    end = "\r\n" if rng.random() < 0.15 else "\n"
    lines = [",".join(header)] + [",".join(r) for r in rows]
    damage = rng.random() if not clean else 1.0
    if damage < 0.05 and len(lines) > 1:
        lines.insert(rng.randint(1, len(lines)), "")  # a blank line
    elif damage < 0.1 and len(lines) > 1:
        i = rng.randint(1, len(lines) - 1)
        lines[i] += "," + lines[i].split(",")[-1]  # ragged
    elif damage < 0.15 and len(lines) > 1:
        i = rng.randint(1, len(lines) - 1)
        lines[i] = lines[i].replace(",", ',"', 1) + '"'  # a quoted cell
    elif damage < 0.18 and len(lines) > 1:
        lines[-1] = lines[-1].replace(",", ',"', 1)  # an unterminated quote
    text = end.join(lines) + (end if rng.random() > 0.1 or clean else "")
    if not clean and rng.random() < 0.05:
        text = text.replace("\n", "\r", 1)  # a lone CR
    if not clean and rng.random() < 0.05:
        text = text + "5,\x00\n"
    data = text.encode("utf-8")
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    if not clean and rng.random() < 0.03:
        data = data.replace(b"\n", b"\n\xe9", 1)  # not UTF-8
    return data


def _read_or_error(path, **kw):
    try:
        return csv_reader.read(path, **kw)
    except SourceError as exc:
        return str(exc)


@pytest.mark.parametrize("seed", range(4))
def test_small_csv_path_matches_row_by_row(tmp_path, seed):
    rng = random.Random(seed)
    taken = 0
    for i in range(150):
        data = _small_csv(rng)
        p = tmp_path / f"r{i}.csv"
        p.write_bytes(data)
        slow = _read_or_error(p, fast=False)
        small = csv_reader._read_small(p, csv_reader.FORMAT, None, data)
        if small is not None:
            taken += 1
            assert not isinstance(slow, str), (data, slow)
            assert_same_raw_runs(small, slow)
        got = _read_or_error(p)
        if isinstance(slow, str):
            assert got == slow, data
        else:
            assert_same_raw_runs(got, slow)
    assert taken >= 30  # the generator does reach the shortcut (and not only its refusals)


@pytest.mark.parametrize(
    "text",
    [
        "step,loss,lr\n0,1.5,1e-3\n1,1.4,1e-3\n",
        "step,loss,val_loss\n0,1.5,\n1,1.4,2.0\n2,,null\n",
        "val_loss,step,loss\n,0, 1\n2.5,1,\n",  # series first seen out of column order
        "step,wall_time,loss\n0,12.5,1\n1,x,2\n2,,\n",
        "step,loss\n0,\n1,n/a\n",  # no value at all: the run is still named
        "Step , Loss \r\n 0 , 1 \r\n1,\u00a02\r\n",
        "\ufeffstep,loss\n0,nan\n1,-inf\n2,-0\n",
        "step\n0\n1\n",
    ],
)
def test_small_csv_path_takes_clean_files(tmp_path, text):
    p = tmp_path / "run.csv"
    p.write_bytes(text.encode("utf-8"))
    small = csv_reader._read_small(p, csv_reader.FORMAT, None, p.read_bytes())
    assert small is not None
    assert_same_raw_runs(small, csv_reader.read(p, fast=False))


def test_large_files_do_not_take_the_small_path(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("step,loss\n" + "".join(f"{i},1.5\n" for i in range(5000)))
    assert p.stat().st_size >= csv_reader.FAST_MIN_BYTES
    assert csv_reader._small_file(p) is None
    assert_same_raw_runs(csv_reader.read(p), csv_reader.read(p, fast=False))


# --------------------------------------------------------------------------- restarts


def _series(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_codes = int(rng.integers(1, 4))
    n = int(rng.integers(0, 40)) if rng.random() < 0.8 else int(rng.integers(200, 700))
    codes = rng.integers(0, n_codes, n).astype(np.int32)
    kind = rng.random()
    if kind < 0.4:  # row-major wide layout: every series once a step
        steps = np.repeat(np.arange(n // n_codes + 1), n_codes)[:n]
        codes = np.tile(np.arange(n_codes), n // n_codes + 1)[:n].astype(np.int32)
    elif kind < 0.7:
        steps = np.sort(rng.integers(0, 30 + n, n))
    else:
        steps = np.cumsum(rng.integers(-3, 4, n))
    if rng.random() < 0.2 and n > 2:  # a rewind or a repeat somewhere
        i = int(rng.integers(1, n))
        steps[i:] -= int(rng.integers(0, 5))
    repeat = rng.random(n_codes) < 0.5
    return codes, steps.astype(np.int64), repeat


def test_restart_precheck_agrees_with_the_full_search():
    rng = np.random.default_rng(0)
    quick = found = large = 0
    for _ in range(3000):
        codes, steps, repeat = _series(rng)
        full = restarts._find(codes, steps, repeat)
        assert restarts.find(codes, steps, repeat) == full
        if len(steps) >= 2 and restarts._none_back(codes, steps, repeat):
            quick += 1
            assert full == []
        found += bool(full)
        large += len(steps) > restarts._SMALL
    assert quick > 500 and found > 200 and large > 300  # both answers, both sizes


# --------------------------------------------------------------------------- name mapping


@pytest.mark.parametrize(
    "overrides", [None, {}, {"train/loss": "lm_loss"}, {"train/loss": "a", "val/loss": "a"}]
)
def test_shared_name_mapping_is_resolve(overrides):
    for names in (
        ("loss", "lr", "grad_norm"),
        ("lm_loss", "loss", "train/loss", "a"),
        ("reward", "loss", "kl"),
        ("eval_loss", "epoch"),
        (),
    ):
        for ctx in (None, aliases.Context(), aliases.Context("tensorboard", "val")):
            got = aliases.resolve_shared(names, ctx, overrides)
            assert dict(got) == aliases.resolve(names, ctx, overrides)
            assert aliases.resolve_shared(list(names), ctx, overrides) is got  # remembered
            with pytest.raises(TypeError):
                got["x"] = None  # shared between runs: read-only


# --------------------------------------------------------------------------- config listing


@pytest.mark.parametrize("seed", range(3))
def test_listing_filter_finds_what_probing_finds(tmp_path, seed):
    rng = random.Random(seed)
    for i in range(25):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "log.csv").write_text("step,loss\n0,1\n")
        for name in rng.sample([*configs.GENERIC_NAMES, "run.json"], rng.randint(0, 4)):
            spelled = name.upper() if rng.random() < 0.2 else name
            what = rng.random()
            if what < 0.1:
                (d / spelled).mkdir()  # a directory of that name: not a config
            elif what < 0.2:
                (d / spelled).symlink_to(d / "missing.json")  # dangling
            elif spelled.endswith(".yaml"):
                (d / spelled).write_text(f"lr: {i}e-4\nwarmup_steps: {i}\n")
            elif spelled == "run.json":
                (d / spelled).write_text('{"stabdiag_version": "1", "precision": "bf16"}')
            else:
                (d / spelled).write_text(f'{{"learning_rate": {i}e-4, "max_grad_norm": 1.0}}')
        names_in = functools.lru_cache(maxsize=None)(configs.dir_names)
        for fmt in ("csv", "nanogpt"):
            probed = configs.for_run(d / "log.csv", fmt, {})
            assert configs.for_run(d / "log.csv", fmt, {}, (), names_in) == probed


def test_unlistable_directory_falls_back_to_probing(tmp_path):
    assert configs.dir_names(tmp_path / "absent") is None
    assert configs._may_exist(None, "config.json")
    assert not configs._may_exist(frozenset({"run.json"}), "config.json")
    assert configs._may_exist(frozenset({"config.json"}), "CONFIG.JSON")


# --------------------------------------------------------------------------- walk


def test_walk_real_paths_are_realpaths(tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "x.csv").write_text("step,loss\n0,1\n")
    (root / "a" / "b" / "y.csv").write_text("step,loss\n0,1\n")
    (root / "link.csv").symlink_to(root / "a" / "x.csv")
    (root / "dirlink").symlink_to(root / "a" / "b")
    (root / "c").mkdir()
    (root / "c" / "rel.csv").symlink_to(os.path.join("..", "a", "b", "y.csv"))
    outer = tmp_path / "outer"
    outer.symlink_to(root)  # the root itself reached through a link
    for start in (root, outer):
        got = list(sniff.walk_real(start))
        assert [f for f, _ in got] == list(sniff.walk(start))
        assert len(got) >= 4
        for f, real in got:
            assert real == os.path.realpath(f) == str(f.resolve())


# --------------------------------------------------------------------------- sniffing text logs

TEXT_LINES = [
    "iter 12: loss 2.3456, time 12.5ms, mfu 30.0%",
    "step 100: train loss 2.1, val loss 2.2",
    " iteration       10/     100 | consumed samples: 640 | lm loss: 2.345678E+00 |",
    "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536",
    "{'loss': 2.3456, 'learning_rate': 0.0001, 'epoch': 0.1}",
    "| epoch 001 | loss 9.876 | ppl 940.2 | wps 1234 | ups 1.2 | wpb 2048 | gnorm 1.2 |",
    "s:10 trl:2.3456 lr:0.0001 norm:1.23",
    "step: 10  loss:  2.3456  memory: 10.0GiB  tps: 1234",
    "step:10 - actor/entropy:0.5 - critic/score/mean:0.1",
    "Epoch 1/3: 100%|#####| 10/10 [00:01<00:00]",
    "random note with no metrics",
    "loss = 2.0",
]


def _text_log(rng: random.Random) -> str:
    lines = [rng.choice(TEXT_LINES[-3:]) for _ in range(rng.randint(0, 20))]
    for _ in range(rng.randint(0, 3)):
        lines.insert(rng.randint(0, len(lines)), rng.choice(TEXT_LINES))
    return "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")


@pytest.mark.parametrize("seed", range(2))
def test_sniffing_a_whole_small_file_once_finds_what_rescanning_finds(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    files = []
    for i in range(60):
        suffix = rng.choice([".log", ".out", ".txt", "", ".md", ".err"])
        p = tmp_path / f"f{i}{suffix}"
        text = _text_log(rng)
        if rng.random() < 0.15:  # past the sniffing head: only the deep scan finds it
            text = "x" * 70 + "\n"
            text = text * (registry.HEAD_BYTES // len(text) + 1) + rng.choice(TEXT_LINES)
        p.write_text(text)
        files.append(p)
    fast = [registry.detect(p) for p in files]
    with monkeypatch.context() as m:
        m.setattr(textlog, "whole_file", lambda path, data: contextlib.nullcontext())
        slow = [registry.detect(p) for p in files]
    assert fast == slow
    assert len({f for f in fast if f}) >= 4  # several formats recognised, and some files not
    assert None in fast


DUMP_LINES = [
    "------------------------ arguments ------------------------",
    "  lr .............................................. 0.0001",
    "  clip_grad ....................................... 1.0",
    "-------------------- end of arguments ---------------------",
    "[2024-01-01 00:00:00,000] [INFO] [config.py:1000:print]   train_batch_size ...... 32",
    "[INFO] [config.py:1000:print]   fp16_enabled ................. True",
    "TrainingArguments(output_dir=out, learning_rate=5e-05, max_grad_norm=1.0)",
    "json = {",
    '    "train_batch_size": 8,',
    '    "gradient_clipping": 1.0',
    "}",
    "cmd = deepspeed main.py --learning_rate 1e-3 --zero_stage 2",
    "python train.py --lr 3e-4 --warmup 100",
    "iter 12: loss 2.3456, time 12.5ms, mfu 30.0%",
    "step 3 - loss 2.0 - lr 1.0e-3",
    "loading data... done",
    "a - b . c",
]


@pytest.mark.parametrize("seed", range(2))
def test_argument_dump_prefilter_changes_nothing(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    found = empty = 0
    for i in range(150):
        lines = [rng.choice(DUMP_LINES[-4:]) for _ in range(rng.randint(0, 8))]
        for _ in range(rng.randint(0, 4) if rng.random() < 0.6 else 0):
            lines.insert(rng.randint(0, len(lines)), rng.choice(DUMP_LINES))
        p = tmp_path / f"log{i}.log"
        p.write_text("\n".join(lines) + "\n")
        got = configs._stdout_dumps(p)
        with monkeypatch.context() as m:
            m.setattr(configs, "_DUMP_MARKERS", ("",))  # "" is in every text: no shortcut
            assert configs._stdout_dumps(p) == got
        found += bool(got[0])
        empty += not got[0]
    assert found > 15 and empty > 15  # dumps found in some logs, none in others
