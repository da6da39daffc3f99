"""The merge of runs logged twice stays linear when thousands of runs share their first points
(issue 13 R4), and gives what comparing every pair and appending copy by copy gave: checked
against those reference loops on generated inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stabdiag import sources
from stabdiag.sources import _Cols, _Growth, _pairs


def _all_pairs_reference(members, fmts, decide):
    """Every pair in order, skipping pairs with a merged run or one format (the loop _pairs
    replaces); ``decide(a, b)`` -> the run dropped, or None."""
    gone, seen = {}, []
    fmt = dict(zip(members, fmts, strict=True))
    for ia, a in enumerate(members):
        for b in members[ia + 1 :]:
            if a in gone or b in gone or fmt[a] == fmt[b]:
                continue
            seen.append((a, b))
            drop = decide(a, b)
            if drop is not None:
                gone[drop] = (a if drop == b else b, 1)
    return seen, gone


@pytest.mark.parametrize("seed", range(5))
def test_pairs_visit_what_every_pair_visited(seed):
    rng = random.Random(seed)
    for _ in range(200):
        n = rng.randint(0, 30)
        members = rng.sample(range(100), n)
        fmts = [rng.choice("abc"[: rng.randint(1, 3)]) for _ in members]
        p_merge = rng.random()
        verdicts = {}

        def decide(a, b, verdicts=verdicts, p_merge=p_merge):
            if (a, b) not in verdicts:
                verdicts[a, b] = rng.choice((a, b)) if rng.random() < p_merge else None
            return verdicts[a, b]

        want_seen, want_gone = _all_pairs_reference(members, fmts, decide)
        gone, seen = {}, []
        for a, b in _pairs(members, fmts, gone):
            seen.append((a, b))
            drop = decide(a, b)
            if drop is not None:
                gone[drop] = (a if drop == b else b, 1)
        assert seen == want_seen
        assert gone == want_gone


def _append_reference(keep, extra, sel):
    """Appending one copy's selected rows (the step _Growth batches)."""
    names = list(keep.names)
    index = {n: i for i, n in enumerate(names)}
    for n in extra.names:
        if n not in index:
            index[n] = len(names)
            names.append(n)
    lut = np.array([index[n] for n in extra.names], dtype=np.int64)
    k = int(sel.sum())
    rank = None
    if keep.rank is not None or extra.rank is not None:
        parts = [
            keep.rank if keep.rank is not None else np.full(len(keep), np.nan),
            extra.rank[sel] if extra.rank is not None else np.full(k, np.nan),
        ]
        rank = np.concatenate(
            parts
            if all(p.dtype.kind in "iu" for p in parts)
            else [p.astype(np.float64) for p in parts]
        )
    ((path, _),) = extra.sources
    return _Cols(
        keep.run,
        np.concatenate([keep.step, extra.step[sel]]),
        np.concatenate([keep.code, lut[extra.code[sel]]]),
        np.asarray(names, dtype=object),
        np.concatenate([keep.value, extra.value[sel]]),
        np.concatenate([keep.wall, extra.wall[sel]]),
        keep.sources + ((path, k),),
        rank,
    )


def _random_cols(rng: np.random.Generator, i: int) -> _Cols:
    pool = np.array(["train/loss", "lr", "grad_norm", "val/loss", "x", "restart"], dtype=object)
    names = pool[rng.permutation(len(pool))[: rng.integers(1, len(pool) + 1)]]
    n = int(rng.integers(0, 12))
    rank_kind = rng.integers(0, 4)
    rank = (
        None
        if rank_kind == 0
        else rng.integers(0, 3, n).astype(np.int64 if rank_kind == 1 else np.int32)
        if rank_kind < 3
        else np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 3, n).astype(float))
    )
    return _Cols(
        f"run{i}",
        rng.integers(0, 50, n).astype(np.int64),
        rng.integers(0, len(names), n).astype(np.uint8 if i % 2 else np.int64),
        names,
        rng.standard_normal(n),
        np.where(rng.random(n) < 0.5, np.nan, rng.random(n)),
        ((f"/logs/run{i}.csv", n),),
        rank,
    )


def test_growth_gives_what_appending_copy_by_copy_gives():
    rng = np.random.default_rng(0)
    for trial in range(300):
        keep = _random_cols(rng, 0)
        want, grown = keep, _Growth(keep)
        for j in range(int(rng.integers(1, 5))):
            extra = _random_cols(rng, j + 1)
            sel = rng.random(len(extra)) < 0.7
            want = _append_reference(want, extra, sel)
            grown.add(extra, sel)
        got = grown.cols()
        assert (got.run, got.sources, got.names.tolist()) == (
            want.run,
            want.sources,
            want.names.tolist(),
        ), trial
        for f in ("step", "code", "value", "wall", "rank"):
            u, v = getattr(got, f), getattr(want, f)
            assert (u is None) == (v is None), (trial, f)
            if u is not None:
                assert u.dtype == v.dtype, (trial, f)
                np.testing.assert_array_equal(u, v, err_msg=f"{trial} {f}")


def test_thousands_of_copies_merge_into_one_run(tmp_path):
    """2,000 JSONL copies of one CSV run: one run, a note per copy, the series only the copies
    have taken once (from the first copy; later copies add nothing new)."""
    rows = [(s, 2.0 - s * 0.01) for s in range(1, 6)]
    (tmp_path / "a.csv").write_text("step,loss\n" + "".join(f"{s},{v}\n" for s, v in rows))
    for i in range(2000):
        (tmp_path / f"c{i:04d}.jsonl").write_text(
            "".join(f'{{"step": {s}, "loss": {v}, "lr": 0.001}}\n' for s, v in rows)
        )
    res = sources.load([tmp_path], cache=False)
    assert len(res.runs) == 1
    (run,) = res.runs
    assert run.format == "csv"
    notes = [w for w in run.warnings if "is the same run as" in w]
    assert len(notes) == 2000
    assert notes[0].endswith("read once, its 1 other series added")
    assert all(w.endswith("read once") for w in notes[1:])
    assert len(res.table) == 10  # the CSV's loss and the first copy's lr
