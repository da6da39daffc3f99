"""MetricsTable: the one long table every reader writes and every detector reads.

What the detectors rely on: a repeated step keeps the row written last (a resumed run rewrites
steps), steps come out ascending and unique, non-finite values survive (a NaN loss is evidence),
and a multi-rank log is seen through its lowest rank while every rank stays available.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabdiag.table import (
    COLUMNS,
    GRAD_NORM,
    GRAD_NORM_PREFIX,
    TRAIN_LOSS,
    MetricsTable,
    RunData,
    Series,
    is_canonical,
    row_ranges,
    split_codes,
)


def _table(run: str, steps, metrics, values, **kw) -> MetricsTable:
    return MetricsTable.from_records(run, steps, metrics, values, source="test", **kw)


def test_a_frame_without_the_contract_columns_is_refused_by_name() -> None:
    frame = pd.DataFrame({"run": ["a"], "step": [1], "metric": [TRAIN_LOSS], "value": [1.0]})
    with pytest.raises(ValueError, match=r"missing columns \['wall_time', 'source'\]"):
        MetricsTable(frame)


def test_from_records_fills_the_contract_columns_and_types() -> None:
    t = _table("a", [3, 1], [TRAIN_LOSS, GRAD_NORM], [2, 5])
    f = t.frame
    assert tuple(f.columns) == COLUMNS and len(t) == 2
    assert f["step"].dtype == np.int64 and f["value"].dtype == np.float64
    assert f["wall_time"].isna().all() and set(f["run"]) == {"a"} and set(f["source"]) == {"test"}
    assert not t.has_ranks
    ranked = _table("a", [1, 1], [TRAIN_LOSS] * 2, [1.0, 2.0], rank=[0, 1], wall_time=[10.0, 11.0])
    assert ranked.has_ranks and ranked.frame["wall_time"].tolist() == [10.0, 11.0]


def test_concat_keeps_write_order_and_an_all_empty_concat_is_a_typed_empty_table() -> None:
    a = _table("a", [1], [TRAIN_LOSS], [1.0])
    b = _table("b", [1], [TRAIN_LOSS], [2.0])
    both = MetricsTable.concat([b, MetricsTable.empty(), a])
    assert both.runs() == ["b", "a"] and both.frame.index.tolist() == [0, 1]
    empty = MetricsTable.concat([MetricsTable.empty()])
    assert len(empty) == 0 and tuple(empty.frame.columns) == COLUMNS
    assert empty.frame["step"].dtype == np.int64 and empty.runs() == []


def test_runs_and_metrics_come_in_first_seen_order() -> None:
    t = MetricsTable.concat(
        [
            _table("z", [1, 1], [GRAD_NORM, TRAIN_LOSS], [1.0, 2.0]),
            _table("a", [1, 2], ["custom/x", GRAD_NORM], [3.0, 4.0]),
        ]
    )
    assert t.runs() == ["z", "a"]
    assert t.metrics() == [GRAD_NORM, TRAIN_LOSS, "custom/x"]
    assert t.metrics("a") == ["custom/x", GRAD_NORM]


def test_series_sorts_steps_and_the_row_written_last_wins_a_repeated_step() -> None:
    # a run logged 1..3, crashed, resumed from step 2 and rewrote 2 and 3
    t = _table("a", [1, 2, 3, 2, 3], [TRAIN_LOSS] * 5, [5.0, 4.0, 9.0, 4.5, 3.5])
    s = t.series("a", TRAIN_LOSS)
    assert s.steps.tolist() == [1, 2, 3] and s.values.tolist() == [5.0, 4.5, 3.5]
    assert s.steps.dtype == np.int64 and s.values.dtype == np.float64
    assert len(t.series("a", "absent/metric")) == 0 and len(t.series("nobody", TRAIN_LOSS)) == 0


def test_non_finite_values_are_kept_and_finite_drops_them() -> None:
    t = _table("a", [1, 2, 3, 4], [TRAIN_LOSS] * 4, [1.0, np.nan, np.inf, 0.5])
    s = t.run_data("a").get(TRAIN_LOSS)
    assert s is not None and len(s) == 4 and np.isnan(s.values[1]) and np.isinf(s.values[2])
    assert s.finite.steps.tolist() == [1, 4] and s.finite.values.tolist() == [1.0, 0.5]


def test_run_data_cuts_one_run_out_of_many_with_meta() -> None:
    t = MetricsTable.concat(
        [
            _table("a", [2, 1, 2], [TRAIN_LOSS] * 3, [2.0, 1.0, 2.5]),
            _table("b", [1], [TRAIN_LOSS], [7.0]),
            _table("a", [1], [GRAD_NORM + "/layer0"], [0.1]),
        ]
    )
    rd = t.run_data("a", meta={"config": {"lr": 1e-3}})
    assert isinstance(rd, RunData) and rd.name == "a" and rd.meta == {"config": {"lr": 1e-3}}
    assert list(rd.series) == [TRAIN_LOSS, GRAD_NORM + "/layer0"] and rd.by_rank == {}
    assert rd.series[TRAIN_LOSS].values.tolist() == [1.0, 2.5]
    assert list(rd.with_prefix(GRAD_NORM_PREFIX)) == [GRAD_NORM + "/layer0"]
    assert t.run_data("b").series[TRAIN_LOSS].values.tolist() == [7.0]


def test_a_multi_rank_run_is_seen_through_its_lowest_rank_and_keeps_every_rank() -> None:
    t = MetricsTable.concat(
        [
            _table("a", [1, 2, 1, 2], [TRAIN_LOSS] * 4, [3.0, 2.0, 3.1, 9.0], rank=[1, 1, 2, 2]),
            _table("a", [1, 2], [GRAD_NORM] * 2, [0.5, 0.4], rank=[2, 2]),
            _table("a", [5], ["train/tokens_per_s"], [100.0]),  # a rank-less row (NaN rank)
        ]
    )
    # series(): the lowest rank that logged the metric
    assert t.series("a", TRAIN_LOSS).values.tolist() == [3.0, 2.0]
    rd = t.run_data("a")
    assert rd.series[TRAIN_LOSS].values.tolist() == [3.0, 2.0]
    assert rd.series[GRAD_NORM].values.tolist() == [0.5, 0.4]  # rank 2 is its lowest rank
    assert rd.series["train/tokens_per_s"].values.tolist() == [100.0]
    assert sorted(rd.by_rank[TRAIN_LOSS]) == [1, 2] and list(rd.by_rank[GRAD_NORM]) == [2]
    assert rd.by_rank[TRAIN_LOSS][2].values.tolist() == [3.1, 9.0]


def test_rundata_get_treats_an_empty_series_as_absent() -> None:
    empty = Series(np.array([], dtype=np.int64), np.array([], dtype=np.float64))
    rd = RunData("a", {TRAIN_LOSS: empty})
    assert rd.get(TRAIN_LOSS) is None and rd.get(GRAD_NORM) is None
    assert rd.with_prefix("train/") == {}


def test_canonical_names_are_the_listed_ones_and_the_per_layer_prefixes() -> None:
    assert is_canonical(TRAIN_LOSS) and is_canonical(GRAD_NORM + "/blocks.0.attn")
    assert is_canonical("train/act_rms/layer3")
    assert not is_canonical("loss") and not is_canonical("train/loss_smoothed")


def _same_run_data(a: RunData, b: RunData) -> None:
    assert a.name == b.name and dict(a.meta) == dict(b.meta)
    assert list(a.series) == list(b.series)  # same metrics in the same (first-seen) order
    for m in a.series:
        np.testing.assert_array_equal(a.series[m].steps, b.series[m].steps)
        np.testing.assert_array_equal(a.series[m].values, b.series[m].values)
        assert a.series[m].steps.dtype == np.int64 and a.series[m].values.dtype == np.float64
    assert {m: sorted(r) for m, r in a.by_rank.items()} == {
        m: sorted(r) for m, r in b.by_rank.items()
    }


@pytest.mark.parametrize("seed", range(6))
def test_row_ranges_cut_each_run_as_run_data_does(seed: int) -> None:
    """The numpy cut of a row range (what analysis uses on loaded runs) gives the same series as
    the pandas cut: repeated steps (the later row wins), steps out of order, NaN/Inf values,
    metrics interleaved, an empty run, and a run with ranks (which takes the pandas path)."""
    rng = np.random.default_rng(seed)
    names = [TRAIN_LOSS, GRAD_NORM, "val/loss", "custom/x", GRAD_NORM_PREFIX + "l0"]
    tables, sizes = [], []
    for r in range(12):
        n = int(rng.integers(0, 40)) if r != 3 else 0
        n = 3000 if r == 7 else n  # a run past SPLIT_SMALL: split with one sort
        steps = rng.integers(0, 15, n)
        metrics = rng.choice(names[: int(rng.integers(1, 6))], n)
        values = rng.choice([1.5, -2.0, np.nan, np.inf, -np.inf, 0.0, 3.25], n)
        values = np.where(rng.random(n) < 0.5, rng.normal(size=n), values)
        kw = {"rank": rng.integers(0, 3, n)} if r == 5 else {}
        tables.append(_table(f"r{r}", steps, metrics, values, **kw))
        sizes.append(n)
    full = MetricsTable.concat(tables)
    # a categorical metric column, as sources.load builds the table
    full = MetricsTable(full.frame.assign(metric=full.frame["metric"].astype("category")))
    ends = np.cumsum(sizes).tolist()
    bounds = list(zip([0, *ends[:-1]], ends, strict=True))
    for r, (cut, t) in enumerate(zip(row_ranges(full, bounds), tables, strict=True)):
        assert len(cut) == len(t)
        _same_run_data(cut.run_data(f"r{r}", meta={"k": r}), t.run_data(f"r{r}", meta={"k": r}))


def test_split_codes_skips_rows_without_a_metric() -> None:
    s = split_codes(
        np.array([1, -1, 0, 1]),
        np.array(["a", "b"], dtype=object),
        np.array([3, 1, 2, 1]),
        np.array([1.0, 2.0, 3.0, 4.0]),
    )
    assert list(s) == ["b", "a"] and s["b"].steps.tolist() == [1, 3]
    assert s["b"].values.tolist() == [4.0, 1.0] and s["a"].values.tolist() == [3.0]
