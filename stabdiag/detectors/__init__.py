"""Detectors: one module per kind, an explicit registry, and ``run_detectors``.

Codes are stable and never reused: SD0xx non-finite, SD1xx loss shape, SD2xx gradients,
SD3xx precision, SD4xx logits, SD5xx schedule, SD6xx run/infrastructure, SD7xx RL fine-tuning (SD002: RL non-finite).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from stabdiag.detectors import (
    attention_logit_growth,
    divergence,
    fp16_overflow,
    grad_explosion,
    grad_spike,
    loss_spike,
    lr_schedule,
    nonfinite,
    output_logit_drift,
    rank_divergence,
    restart,
    rl_clip_saturation,
    rl_entropy_collapse,
    rl_kl_blowup,
    rl_length_hacking,
    rl_logprob_mismatch,
    rl_nonfinite,
    rl_preference_overfit,
    rl_value_divergence,
    rl_zero_signal,
    stall,
)
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Skipped
from stabdiag.table import RunData

DETECTORS: tuple[Detector, ...] = (
    nonfinite.DETECTOR,
    loss_spike.DETECTOR,
    divergence.DETECTOR,
    stall.DETECTOR,
    grad_spike.DETECTOR,
    grad_explosion.DETECTOR,
    fp16_overflow.DETECTOR,
    attention_logit_growth.DETECTOR,
    output_logit_drift.DETECTOR,
    lr_schedule.DETECTOR,
    restart.DETECTOR,
    rank_divergence.DETECTOR,
    # RL fine-tuning (issue 20): judge only runs with rl/ series, silent on others
    rl_nonfinite.DETECTOR,
    rl_kl_blowup.DETECTOR,
    rl_entropy_collapse.DETECTOR,
    rl_length_hacking.DETECTOR,
    rl_zero_signal.DETECTOR,
    rl_clip_saturation.DETECTOR,
    rl_logprob_mismatch.DETECTOR,
    rl_value_divergence.DETECTOR,
    rl_preference_overfit.DETECTOR,
)

_INDEX = {d.kind: d for d in DETECTORS} | {d.code.lower(): d for d in DETECTORS}


def by_kind(kind_or_code: str) -> Detector:
    """The detector for a kind slug (``loss-spike``) or code (``SD101``, any case)."""
    try:
        return _INDEX[kind_or_code.strip().lower()]
    except KeyError:
        known = ", ".join(f"{d.kind} ({d.code})" for d in DETECTORS)
        raise KeyError(f"unknown detector {kind_or_code!r}; known: {known}") from None


def _resolve(names: Collection[str] | None) -> set[str] | None:
    return None if names is None else {by_kind(n).kind for n in names}


def selected(
    select: Collection[str] | None = None, ignore: Collection[str] | None = None
) -> list[Detector]:
    """Registry order, filtered by kinds/codes to keep (``select``) and to drop (``ignore``)."""
    keep, drop = _resolve(select), _resolve(ignore) or set()
    return [d for d in DETECTORS if (keep is None or d.kind in keep) and d.kind not in drop]


def run_detectors(
    runs: Sequence[RunData],
    select: Collection[str] | None = None,
    ignore: Collection[str] | None = None,
    configs: Mapping[str, Any] | None = None,
) -> tuple[list[Finding], list[Skipped]]:
    """Run the selected detectors on every run; findings sorted by run order, then step.

    ``configs`` maps a kind to that detector module's ``Config`` (thresholds from a policy file);
    kinds not in it run with their defaults.
    """
    dets = selected(select, ignore)
    configs = configs or {}
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    # overflow or an all-NaN window in a statistic is not the user's news (stderr); entered once,
    # not per detector and run (on 100,000 small runs that was a tenth of the time: issue 13 R4)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for run in runs:
            for det in dets:
                cfg = configs.get(det.kind)
                try:  # one detector failing on odd data must not take the report down (issue 13 C7)
                    res = det.check(run) if cfg is None else det.check(run, cfg)
                except Exception as exc:  # noqa: BLE001 - becomes that detector's "not checked"
                    res = Skipped(
                        code=det.code,
                        kind=det.kind,
                        run=run.name,
                        reason=f"detector error on this run's data ({type(exc).__name__}: "
                        f"{str(exc)[:160]})",
                    )
                if isinstance(res, Skipped):
                    skipped.append(res)
                else:
                    findings.extend(res)
    return sort_findings(findings, [r.name for r in runs]), skipped


def sort_findings(findings: Sequence[Finding], run_names: Sequence[str]) -> list[Finding]:
    """Findings in report order: by the runs' order, then by step (stable within a step)."""
    order = {name: i for i, name in enumerate(run_names)}
    return sorted(
        findings,
        key=lambda f: (
            order.get(f.run, len(order)),
            f.step_start if f.step_start is not None else -1,
        ),
    )


__all__ = ["DETECTORS", "Detector", "by_kind", "run_detectors", "selected", "sort_findings"]
