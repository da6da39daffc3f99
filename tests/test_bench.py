"""The detection benchmark in small: a few seeds of the labelled corpus, our F1 above a floor.

The full benchmark (40 seeds, real logs, trained runs) is ``python benchmarks/detect.py``; this
guards against regressions in CI (a few seconds).
"""

from __future__ import annotations

import numpy as np
import pytest
from stabbench import baselines as bl
from stabbench import corpus, report, scoring

# Committed floor: the full benchmark reaches >= 0.98 on both halves; a small sample is noisier.
F1_FLOOR = 0.95
FA_CEILING = 0.1  # false alarms per 10k clean steps (the goal)


@pytest.fixture(scope="module")
def result() -> dict:
    return scoring.evaluate(corpus.synthetic(range(4)))


def test_our_f1_stays_above_the_floor(result: dict) -> None:
    ours = result["overall"][scoring.OURS]
    assert ours["f1"] >= F1_FLOOR, report.text(result)
    assert ours["false_alarms_per_10k"] <= FA_CEILING, report.text(result)


def test_spike_latency_is_at_most_two_steps(result: dict) -> None:
    for cls in scoring.SPIKE_CLASSES:
        assert result["classes"][cls][scoring.OURS]["latency_median"] <= 2


def test_every_class_has_labels_and_every_baseline_is_scored(result: dict) -> None:
    assert all(result["classes"][c][scoring.OURS]["labels"] > 0 for c in corpus.CLASSES)
    names = {n for rows in result["classes"].values() for n in rows}
    assert {b.name for b in bl.BASELINES} <= names
    md = report.markdown({"dev": result})
    assert "| stabdiag |" in md and "## dev" in md


def test_corpus_is_deterministic_and_split_by_seed() -> None:
    a, b = corpus.cases_for_seed(3), corpus.cases_for_seed(3)
    assert [c.name for c in a] == [c.name for c in b]
    for x, y in zip(a, b, strict=True):
        assert x.labels == y.labels
        np.testing.assert_array_equal(
            x.run.get("train/loss").values, y.run.get("train/loss").values
        )
    assert corpus.split_of(2) == "dev" and corpus.split_of(3) == "heldout"


def test_matching_tolerance_and_latency() -> None:
    lab = corpus.Label("loss_spike", 100, 100)
    case = corpus.Case("c", "t", 0, corpus.cases_for_seed(0)[0].run, (lab,), 1)
    hit = scoring.Detection(101, 101, frozenset({"loss_spike"}), "loss_spike")
    far = scoring.Detection(500, 500, frozenset({"loss_spike"}), "loss_spike")
    t = scoring.score_case(case, [hit, far], ["loss_spike"])["loss_spike"]
    assert (t.tp, t.fp, t.found, t.latencies) == (1, 1, 1, [1])


# Baselines: the published rules on hand-made series.


def _flat(n: int = 300, level: float = 2.0, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    return level * (1 + noise * np.random.default_rng(seed).standard_normal(n))


def test_olmo_core_needs_a_full_window_and_six_sigma() -> None:
    x = _flat()
    x[100] = x[200] = 3.0
    m = bl.olmo_core(x)
    assert not m[100] and m[200]  # window of 128 not yet full at 100


def test_llm_foundry_trips_on_the_fifth_consecutive_outlier() -> None:
    x = _flat(400)
    x[250:254] = 5.0  # four outliers: patience 4 holds
    x[300:306] = 5.0  # six: trips on the fifth
    m = bl.llm_foundry(x)
    assert not m[250:254].any() and np.flatnonzero(m)[0] == 304


def test_lightning_needs_three_x_the_running_mean() -> None:
    x = _flat(100)
    x[50], x[70] = 2.5 * 2.0, 3.2 * 2.0
    m = bl.lightning(x)
    assert not m[50] and m[70]


def test_zclip_flags_after_warmup_only() -> None:
    x = _flat(200, noise=0.05)
    x[10] = x[100] = 20.0
    m = bl.zclip(x)
    assert not m[10] and m[100]


def test_megatron_ten_times_the_first_hundred_max() -> None:
    x = _flat(300)
    x[0] = 10.0
    x[200], x[250] = 50.0, 150.0
    m = bl.megatron(x)
    assert not m[200] and m[250]
