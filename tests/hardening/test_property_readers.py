"""Property-based generation for the CSV, JSONL and stdout-text readers (hypothesis, derandomized).

Generated files mix valid records with hostile cells (NaN/Inf spellings, huge and negative
numbers, over-long digit runs, quotes, separators, control bytes, non-UTF-8). Invariant as in the
mutation suite; for inputs that are all valid, every row comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hardening_util import read_strict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stabdiag.errors import SourceError

EXAMPLES = 200 * int(os.environ.get("STABDIAG_FUZZ_SCALE", "1"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(
        [
            "",
            "nan",
            "-nan",
            "NaN",
            "inf",
            "-Infinity",
            "null",
            "None",
            "n/a",
            "1e999",
            "9" * 400,
            '"',
            '""',
            ",",
            "\r",
            "\x00",
            "\u00e9",
            "oops",
            " 1.5 ",
            "1,5",
        ]
    ),
    st.text(max_size=12),
)
step_cells = st.one_of(st.integers(min_value=-5, max_value=10**6).map(str), cells)


def _write(name: str, data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="stabdiag-prop-"))
    f = d / name
    f.write_bytes(data)
    return f


def _check(name: str, data: bytes):
    f = _write(name, data)
    try:
        return read_strict(f)
    finally:
        shutil.rmtree(f.parent, ignore_errors=True)


@SETTINGS
@given(
    header=st.lists(
        st.sampled_from(
            [
                "step",
                "loss",
                "lr",
                "grad_norm",
                "rank",
                "run",
                "metric",
                "value",
                "wall_time",
                "x,y",
                "",
            ]
        ),
        min_size=1,
        max_size=6,
    ),
    rows=st.lists(st.lists(cells, min_size=0, max_size=7), max_size=25),
    enc=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    crlf=st.booleans(),
)
def test_csv_property(header, rows, enc, crlf):
    nl = "\r\n" if crlf else "\n"
    text = nl.join([",".join(header)] + [",".join(r) for r in rows]) + nl
    _check("gen.csv", text.encode(enc, errors="replace"))


@SETTINGS
@given(
    lines=st.lists(
        st.one_of(
            st.dictionaries(
                st.sampled_from(
                    ["step", "loss", "lr", "rank", "run", "wall_time", "metric", "value", "nested"]
                ),
                st.one_of(
                    st.floats(),
                    st.integers(min_value=-(10**400), max_value=10**400),
                    st.text(max_size=8),
                    st.none(),
                    st.booleans(),
                    st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
                ),
                max_size=6,
            ).map(lambda d: json.dumps(d)),
            st.sampled_from(
                [
                    "",
                    "[",
                    "{",
                    "[1,2]",
                    '"s"',
                    "null",
                    '{"step": 1e30, "loss": 1}',
                    '{"step": 1, "loss": ' + "[" * 5000,
                ]
            ),
        ),
        max_size=25,
    )
)
def test_jsonl_property(lines):
    _check("gen.jsonl", "\n".join(lines).encode())


def test_jsonl_valid_rows_all_come_back():
    f = _write(
        "ok.jsonl",
        "".join(json.dumps({"step": i, "loss": 1.0 / (i + 1)}) + "\n" for i in range(50)).encode(),
    )
    r = read_strict(f)
    assert not isinstance(r, SourceError) and len(r.table.frame) == 50


TEXT_LINES = st.one_of(
    st.builds(
        lambda s, v, k: (
            f"iteration {s}/ 100 | consumed samples: {s} | lm loss: {v} | "
            f"number of skipped iterations: {k} |"
        ),
        st.integers(0, 10**25),
        cells,
        st.integers(-3, 10**15),
    ),
    st.builds(
        lambda s, v: f"iter {s}: loss {v}, time 12.3ms, mfu 1.0%", st.integers(0, 10**25), cells
    ),
    st.builds(lambda s, v: f"s:{s} trl:{v} lr:1e-3 norm:{v}", st.integers(0, 10**25), cells),
    st.builds(
        lambda s, v: f"step: {s}  loss: {v}  grad_norm: 1.0 [titan]", st.integers(0, 10**25), cells
    ),
    st.builds(lambda v: f"{{'loss': {v}, 'learning_rate': 1e-3, 'epoch': 0.1}}", cells),
    st.builds(
        lambda s, k: f"[Rank 0] step={s}, skipped={k}",
        st.integers(0, 10**25),
        st.integers(0, 10**25),
    ),
    st.builds(
        lambda a: (
            f"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: {a}, "
            f"reducing to {a}"
        ),
        cells,
    ),
    st.builds(
        lambda v, s: f"| epoch 001:     10 / 100 loss={v}, gnorm={v}, num_updates={s}",
        cells,
        step_cells,
    ),
    st.sampled_from(
        [
            "Traceback (most recent call last):",
            "\x1b[31mstep: 1 loss: 2\x1b[0m",
            "[rank3]: iteration 5/ 10 | lm loss: 1 |",
            "\r",
            "|",
            "[...]",
        ]
    ),
    st.text(max_size=40),
)


@SETTINGS
@given(
    lines=st.lists(TEXT_LINES, max_size=30),
    name=st.sampled_from(["train.out", "main.log", "stdout.txt", "slurm-1.out"]),
)
def test_stdout_text_property(lines, name):
    _check(name, "\n".join(lines).encode("utf-8", errors="replace"))
