"""One diagnosis per run: the likely cause of what the detectors found, with evidence and a
confidence word, written as a senior engineer would open a review ("what happened and why").

Findings say *what* (a spike at 120, NaN from 30); the diagnosis says *why*, by reading them
together with the run's configuration (``RunData.meta['run_config']``, see runconfig.py):
a spike the run injected itself is named as such; no warm-up at a high LR followed by early
trouble is "LR too high for this setup"; an fp16 run whose scale collapses is "fp16 range".
The ordered ``changes`` tell remedies.py which kinds of change answer this cause first.
Rules are checked most specific first; the first that fits wins. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stabdiag.findings import Finding, Severity
from stabdiag.runconfig import RunConfig, num
from stabdiag.table import GRAD_NORM, LOSS_SCALE, LR, MAX_ATTN_LOGIT, RunData

HIGH, MEDIUM, LOW = "high", "medium", "low"
TROUBLE = frozenset(
    {
        "loss-spike",
        "grad-explosion",
        "nonfinite",
        "divergence",
        "stall",
        "attention-logit-growth",
        "output-logit-drift",
        "grad-spike",
    }
)


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    """The likely cause of a run's trouble. ``cause`` is a stable slug; ``statement`` two sentences."""

    run: str
    cause: str
    statement: str
    confidence: str
    evidence: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()  # kinds of change that answer this cause, best first
    explained: tuple[str, ...] = ()  # findings ("kind@step") the cause accounts for by itself
    injected: bool = False  # the cause is a fault the run injected on purpose

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "statement": self.statement,
            "confidence": self.confidence,
            "evidence": list(self.evidence),
            "changes": list(self.changes),
        }


def config_of(run: RunData) -> RunConfig:
    c = run.meta.get("run_config")
    return c if isinstance(c, RunConfig) else RunConfig()


def ref(f: Finding) -> str:
    return f"{f.kind}@{f.step_start}" if f.step_start is not None else f.kind


def diagnose_all(findings: Sequence[Finding], runs: Mapping[str, RunData]) -> dict[str, Diagnosis]:
    """A diagnosis for every run in ``runs`` (and every run a finding names)."""
    own: dict[str, list[Finding]] = {n: [] for n in runs}
    for f in findings:  # grouped once: a scan per run is quadratic on 100,000 runs
        own.setdefault(f.run, []).append(f)
    return {n: diagnose_run(fs, runs.get(n) or RunData(name=n, series={})) for n, fs in own.items()}


def diagnose_run(findings: Sequence[Finding], run: RunData) -> Diagnosis:
    cfg = config_of(run)
    trouble = [
        f
        for f in findings
        if f.kind in TROUBLE
        and f.severity >= Severity.WARNING
        and not (f.kind == "divergence" and f.evidence.get("overfitting"))
    ]
    for rule in (
        _injected,
        _rank,
        _overfitting,
        _fp16,
        _nonfinite_at_start,
        _attention,
        _post_ln,
        _lr_too_high,
        _lr_jump,
        _bad_batch,
        _stall,
        _logit_drift,
    ):
        d = rule(run, cfg, findings, trouble)
        if d is not None:
            return d
    if not trouble:
        info = [f for f in findings if f.kind in ("fp16-overflow", "restart")]
        what = (
            "; only the loss scaler's start-up search"
            if any(f.kind == "fp16-overflow" for f in info)
            else ""
        )
        return Diagnosis(
            run=run.name,
            cause="healthy",
            confidence=HIGH if not findings else MEDIUM,
            statement=f"No instability found{what}. Nothing in the logged series needs a change.",
            evidence=tuple(f.message for f in info[:2]),
        )
    return _unclear(run, cfg, trouble)


# --------------------------------------------------------------------------- helpers


def _first(fs: Sequence[Finding]) -> Finding:
    return min(
        fs, key=lambda f: (f.step_start if f.step_start is not None else 0, -int(f.severity))
    )


def _span(run: RunData) -> tuple[int, int]:
    ends = [(int(s.steps[0]), int(s.steps[-1])) for s in run.series.values() if len(s)]
    return (min(a for a, _ in ends), max(b for _, b in ends)) if ends else (0, 0)


def _planned_steps(run: RunData, cfg: RunConfig) -> int:
    total = cfg.get("total_steps")
    return max(int(total) if isinstance(total, int) else 0, _span(run)[1], 1)


def _early(f: Finding, run: RunData, cfg: RunConfig, frac: float = 0.15) -> bool:
    """Trouble in the first ``frac`` of the planned run (or the first 200 steps)."""
    s = f.step_start if f.step_start is not None else 0
    return s <= max(frac * _planned_steps(run, cfg), min(200, _planned_steps(run, cfg)))


def warmup_end(run: RunData, cfg: RunConfig) -> int | None:
    """The last warm-up step: from the config, else from the logged LR (first step at 95% of peak)."""
    w = cfg.get("warmup_steps")
    if isinstance(w, int):
        return w
    s = run.get(LR)
    if s is None or len(s) < 3:
        return None
    import numpy as np

    v = np.where(np.isfinite(s.values), s.values, 0.0)
    if v.max() <= 0:
        return None
    i = int(np.argmax(v >= 0.95 * v.max()))
    return int(s.steps[i]) if i > 0 else 0


def no_warmup(run: RunData, cfg: RunConfig, findings: Sequence[Finding]) -> tuple[bool, str] | None:
    """(True, evidence) when the run had no warm-up, (False, evidence) when it had one, None unknown."""
    if cfg.get("warmup_other"):
        return False, f"warm-up over {cfg.get('warmup_other')} ({cfg.warmup_other.short_source})"  # type: ignore[union-attr]
    w = cfg.get("warmup_steps")
    if isinstance(w, int):
        src = cfg.warmup_steps.short_source  # type: ignore[union-attr]
        return (
            (True, f"no warm-up configured ({src})")
            if w == 0
            else (False, f"warm-up {w} steps ({src})")
        )
    nw = next(
        (f for f in findings if f.kind == "lr-schedule" and f.evidence.get("issue") == "no_warmup"),
        None,
    )
    if nw is not None:
        return True, nw.message
    end = warmup_end(run, cfg)
    if end is not None and end > 0:
        return False, f"the logged LR rises to its peak by step {end}"
    return None


def _lr_text(cfg: RunConfig, run: RunData) -> str:
    lr = cfg.get("lr")
    if lr is not None:
        return f"LR {num(lr)}"
    s = run.get(LR)
    if s is not None:
        import numpy as np

        v = s.values[np.isfinite(s.values)]
        if len(v) and v.max() > 0:
            return f"LR {num(float(v.max()))} (peak logged)"
    return "this LR"


# --------------------------------------------------------------------------- the rules


def _injected(
    run: RunData, cfg: RunConfig, findings: Sequence[Finding], trouble: Sequence[Finding]
) -> Diagnosis | None:
    events = cfg.get("injected") or ()
    if not events:
        return None
    span = max(_span(run)[1] - _span(run)[0], 1)
    win = max(30, span // 20)
    named, explained = [], []
    for e in events:
        at, last = int(e.get("step", -1)), int(e.get("last_step", e.get("step", -1)))
        near = [
            f
            for f in findings
            if f.step_start is not None
            and at - 2 <= f.step_start <= last + win
            or (
                f.step_end is not None
                and f.step_start is not None
                and f.step_start <= at <= f.step_end
            )
        ]
        if not near:
            continue
        kind = str(e.get("kind"))
        what = {
            "bad_batch": "the bad batch you injected",
            "lr_spike": "the LR spike you injected",
            "grad_scale": "the gradient blow-up you injected",
        }.get(kind, f"the {kind} you injected")
        kinds = sorted({f.kind for f in near})
        named.append(
            f"the {'/'.join(kinds)} at {min(f.step_start or 0 for f in near)} is {what} at step {at}"
        )
        explained += [ref(f) for f in near]
    if not named:
        return None
    rest = [f for f in trouble if ref(f) not in explained]
    recovered = all(
        f.evidence.get("recovered", True)
        for f in findings
        if ref(f) in explained and f.kind == "loss-spike"
    )
    tail = (
        "The run recovered on its own: nothing in the setup needs to change for it."
        if recovered and not rest
        else "Other trouble remains beyond the injected event: see the remedies."
        if rest
        else "It did not recover: the setup could not absorb it."
    )
    src = cfg.injected.short_source  # type: ignore[union-attr]
    return Diagnosis(
        run=run.name,
        cause="injected",
        confidence=HIGH,
        injected=True,
        statement=f"{'; '.join(named).capitalize()} ({src}). {tail}",
        evidence=(src,),
        explained=tuple(explained),
        changes=("injected", "recovery", "clip"),
    )


@dataclass(frozen=True, kw_only=True)
class _OneFinding:
    """A cause that one finding names by itself: the first finding that ``picks`` (among all of
    the run's findings, or only its trouble) is the evidence and, unless ``explains`` says more,
    the only thing the cause accounts for. Rules that weigh several findings or the config are
    functions; these differ only in what they pick and say, so they are data."""

    cause: str
    confidence: str
    picks: Callable[[Finding], bool]
    says: Callable[[Finding], str]
    changes: tuple[str, ...]
    among_trouble: bool = False
    unless: Callable[[RunConfig, Sequence[Finding]], bool] = lambda cfg, trouble: False
    explains: Callable[[Finding, Sequence[Finding]], tuple[str, ...]] | None = None

    def __call__(
        self, run: RunData, cfg: RunConfig, findings: Sequence[Finding], trouble: Sequence[Finding]
    ) -> Diagnosis | None:
        pool = trouble if self.among_trouble else findings
        f = next((x for x in pool if self.picks(x)), None)
        if f is None or self.unless(cfg, trouble):
            return None
        return Diagnosis(
            run=run.name,
            cause=self.cause,
            confidence=self.confidence,
            statement=self.says(f),
            evidence=(f.message,),
            changes=self.changes,
            explained=self.explains(f, trouble) if self.explains else (ref(f),),
        )


_rank = _OneFinding(
    cause="faulty-rank",
    confidence=MEDIUM,
    picks=lambda f: f.kind == "rank-divergence",
    says=lambda f: (
        f"One replica departs from the others from step {f.step_start}: a faulty "
        "device or a desynchronised replica, not the model or the optimizer. Rerun those steps on "
        "other hardware before changing hyperparameters."
    ),
    changes=("hardware",),
)

_overfitting = _OneFinding(
    cause="overfitting",
    confidence=HIGH,
    picks=lambda f: f.kind == "divergence" and bool(f.evidence.get("overfitting")),
    unless=lambda cfg, trouble: bool(trouble),
    says=lambda f: (
        f"The validation loss turned up from step {f.evidence.get('best_val_step')} "
        "while the training loss kept falling: overfitting, not instability. Keep the best "
        "checkpoint and regularise; the optimizer settings are fine."
    ),
    changes=("checkpoint", "regularise"),
)


def _fp16(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    ov = [f for f in findings if f.kind == "fp16-overflow" and f.severity >= Severity.WARNING]
    if not ov:
        return None
    f = ov[0]
    prec = cfg.get("precision") or run.meta.get("precision") or "fp16"
    ev = [f.message] + (
        [f"precision {prec} ({cfg.precision.short_source})"] if cfg.precision else []
    )
    return Diagnosis(
        run=run.name,
        cause="fp16-range",
        confidence=HIGH if run.get(LOSS_SCALE) is not None else MEDIUM,
        statement=f"The fp16 loss scale collapsed or overflowed repeatedly from step {f.step_start}: "
        "values outgrew fp16's range, so updates were skipped or lost precision. It is a "
        "number-format problem first; bf16 removes it.",
        evidence=tuple(ev),
        changes=("precision", "fp32-softmax", "lr", "clip"),
        explained=(ref(f),),
    )


def _nonfinite_at_start(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    nf = [f for f in trouble if f.kind == "nonfinite"]
    if not nf:
        return None
    f = _first(nf)
    first = _span(run)[0]
    if f.step_start is None or f.step_start > first:
        return None
    return Diagnosis(
        run=run.name,
        cause="numerics-or-data",
        confidence=MEDIUM,
        statement=f"The {f.metric} is non-finite from the first logged step {f.step_start}, before any "
        "update could have diverged: a data or numerics problem (an empty or fully masked "
        "batch, log(0), an overflow in the forward pass), not the learning rate.",
        evidence=(f.message,),
        changes=("data", "fp32-softmax", "nan-visible"),
    )


def _attention(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    ag = [f for f in trouble if f.kind == "attention-logit-growth"]
    if not ag or cfg.get("qk_norm") is True:
        return None
    f = ag[0]
    ev = [f.message]
    if cfg.qk_norm is not None:
        ev.append(f"no QK-norm ({cfg.qk_norm.short_source})")
    nw = no_warmup(run, cfg, findings)
    extra = ""
    if nw and nw[0]:
        ev.append(nw[1])
        extra = f" at {_lr_text(cfg, run)} without warm-up"
    hurt = [x for x in trouble if x.kind in ("nonfinite", "loss-spike", "divergence", "stall")]
    follows = (
        f"attention collapses onto single tokens and the loss followed ({_first(hurt).kind} at step "
        f"{_first(hurt).step_start})."
        if hurt
        else "the loss has not suffered yet, but this is how attention-entropy collapse starts."
    )
    conf = HIGH if run.get(MAX_ATTN_LOGIT) is not None and cfg.qk_norm is not None else MEDIUM
    return Diagnosis(
        run=run.name,
        cause="attention-logit-growth",
        confidence=conf,
        statement=f"The max attention logit grew without bound from step {f.step_start}{extra}: "
        f"{follows} This is QK-norm "
        "territory (Wortsman et al. 2023); a lower LR only delays it.",
        evidence=tuple(ev),
        changes=("qk-norm", "lr", "warmup"),
        explained=tuple(
            ref(x) for x in trouble if x.kind in ("attention-logit-growth", "nonfinite")
        ),
    )


def _post_ln(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    if cfg.get("norm_placement") != "post" or not trouble:
        return None
    depth = cfg.get("n_layer")
    nw = no_warmup(run, cfg, findings)
    if not isinstance(depth, int) or depth < 6:
        return None
    f = _first(trouble)
    ev = [f.message, f"post-LN, {depth} layers ({cfg.norm_placement.short_source})"]  # type: ignore[union-attr]
    warm = ""
    if nw and nw[0]:
        ev.append(nw[1])
        warm = " without warm-up"
    return Diagnosis(
        run=run.name,
        cause="deep-post-ln",
        confidence=HIGH if warm else MEDIUM,
        statement=f"A {depth}-layer post-LN transformer{warm} trained poorly from step {f.step_start} "
        f"({f.kind}): post-LN puts the largest gradients near the output at initialisation and "
        "needs a warm-up (Xiong et al. 2020); pre-LN removes the problem.",
        evidence=tuple(ev),
        changes=("norm", "warmup", "lr"),
        explained=tuple(ref(x) for x in trouble),
    )


def _lr_too_high(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    serious = [
        f
        for f in trouble
        if f.kind in ("nonfinite", "divergence", "grad-explosion")
        or (f.kind == "loss-spike" and not f.evidence.get("recovered"))
    ]
    if not serious:
        return None
    f = _first(serious)
    nw = no_warmup(run, cfg, findings)
    clip = cfg.get("clip")
    ev = [f.message]
    reasons = []
    if nw and nw[0] and _early(f, run, cfg):
        ev.append(nw[1])
        reasons.append("without warm-up")
    ge = [x for x in trouble if x.kind == "grad-explosion"]
    if ge and isinstance(clip, float) and clip > 0:
        ev.append(f"grad norm exploded although clipped at {num(clip)} ({cfg.clip.short_source})")  # type: ignore[union-attr]
        reasons.append(f"the grad norm exploded although clipped at {num(clip)}")
    if not reasons and not (
        f.kind in ("nonfinite", "divergence")
        and _early(f, run, cfg, 0.3)
        and (cfg.lr is not None or run.get(LR) is not None)
    ):
        return None  # no sign that the LR was the problem: leave it to the other rules
    conf = HIGH if len(reasons) >= 1 and (cfg.lr is not None or run.get(LR) is not None) else MEDIUM
    end = warmup_end(run, cfg)
    during = end is not None and end > 0 and (f.step_start or 0) <= end
    why = (
        " and ".join(reasons)
        if reasons
        else f"during its {end}-step warm-up, before the LR even reached its peak"
        if during
        else "early in the run"
    )
    fix = (
        "a smaller peak and a warm-up are the fix, tighter clipping only hides it"
        if nw and nw[0]
        else "the warm-up is in place, so a smaller peak LR is the fix; tighter clipping only hides it"
    )
    return Diagnosis(
        run=run.name,
        cause="lr-too-high",
        confidence=conf,
        statement=f"{_lr_text(cfg, run)} is too high for this setup: the run broke at step {f.step_start} "
        f"({f.kind}) {why}. Large early updates hit an optimizer state that has not adapted "
        f"yet; {fix}.",
        evidence=tuple(ev),
        changes=("lr", "warmup", "clip", "beta2", "recovery"),
        explained=tuple(ref(x) for x in trouble),
    )


_lr_jump = _OneFinding(
    cause="lr-jump",
    confidence=MEDIUM,
    picks=lambda f: (
        f.kind == "lr-schedule"
        and f.evidence.get("issue") == "lr_jump"
        and bool(f.evidence.get("trouble"))
    ),
    says=lambda f: (
        f"The LR jumped {f.evidence.get('factor', 0):.1f}x at step "
        f"{f.evidence.get('step')} and {f.evidence.get('trouble')} followed at step "
        f"{f.evidence.get('trouble_step')}: a scheduler fault (a fresh scheduler on resume, a warm "
        "restart), not the peak LR."
    ),
    changes=("schedule", "recovery", "clip"),
    explains=lambda f, trouble: tuple(
        ref(x)
        for x in trouble
        if x.step_start is not None and f.step_start is not None and x.step_start >= f.step_start
    ),
)


def _bad_batch(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    spikes = [f for f in trouble if f.kind in ("loss-spike", "grad-spike")]
    others = [f for f in trouble if f.kind not in ("loss-spike", "grad-spike")]
    if not spikes or others:
        return None
    loss = [f for f in spikes if f.kind == "loss-spike"]
    end = warmup_end(run, cfg)
    early_edge = max(end or 0, 50)
    if loss and all(
        f.evidence.get("recovered") and (f.step_start or 0) <= early_edge for f in loss
    ):
        f = loss[0]
        when = (
            f"during the {end}-step warm-up"
            if end and (f.step_start or 0) <= end
            else f"in the first {early_edge} steps"
        )
        return Diagnosis(
            run=run.name,
            cause="early-transient",
            confidence=MEDIUM,
            statement=f"A loss spike at step {f.step_start}, {when}, that recovered: early transients are common "
            "while Adam's moment estimates adapt and the loss scale settles. Nothing to change unless it recurs later.",
            evidence=(f.message,),
            changes=("recovery",),
            explained=tuple(ref(x) for x in spikes),
        )
    if loss and all(f.evidence.get("recovered") for f in loss):
        steps = ", ".join(str(f.step_start) for f in loss[:4])
        return Diagnosis(
            run=run.name,
            cause="bad-batch",
            confidence=MEDIUM if len(loss) <= 2 else LOW,
            statement=f"{'A one-step loss spike' if len(loss) == 1 else f'{len(loss)} short loss spikes'} "
            f"(step {steps}) that recovered with no trend: most likely a bad batch or data "
            "outlier, not an unstable setup. Look at the batch; no rewind is needed.",
            evidence=tuple(f.message for f in loss[:2]),
            changes=("recovery", "data", "clip"),
            explained=tuple(ref(f) for f in spikes),
        )
    if not loss:
        return Diagnosis(
            run=run.name,
            cause="grad-outliers",
            confidence=LOW,
            statement="Isolated grad-norm outliers without a loss response: rare large gradients "
            "(an outlier batch), harmless so far. Watch whether they grow or recur.",
            evidence=tuple(f.message for f in spikes[:2]),
            changes=("clip", "beta2"),
            explained=tuple(ref(f) for f in spikes),
        )
    return None


def _stall(run, cfg, findings, trouble) -> Diagnosis | None:  # noqa: ANN001
    st = [f for f in trouble if f.kind == "stall"]
    if not st:
        return None
    f = st[0]
    nw = no_warmup(run, cfg, findings)
    chance = f.evidence.get("chance_level")
    if chance:
        return Diagnosis(
            run=run.name,
            cause="stall",
            confidence=MEDIUM,
            statement=f"From step {f.step_start} the loss sits at chance level ({chance}): the model predicts "
            "the prior and has stopped learning from its inputs. Check labels and inputs first (a shuffled or "
            "constant target looks exactly like this), then whether early updates "
            + ("without warm-up " if nw and nw[0] else "")
            + "collapsed the model.",
            evidence=(f.message,) + ((nw[1],) if nw and nw[0] else ()),
            changes=("unstall", "data", "warmup", "lr"),
            explained=tuple(ref(x) for x in trouble),
        )
    if nw and nw[0]:
        return Diagnosis(
            run=run.name,
            cause="lr-too-high",
            confidence=MEDIUM,
            statement=f"Training stopped improving at step {f.step_start} while the LR was still high and "
            f"there was no warm-up: the early updates at {_lr_text(cfg, run)} knocked the model "
            "into a flat region it cannot leave. A warm-up and a lower peak LR are the fix.",
            evidence=(f.message, nw[1]),
            changes=("warmup", "lr", "recovery"),
            explained=tuple(ref(x) for x in trouble),
        )
    return Diagnosis(
        run=run.name,
        cause="stall",
        confidence=LOW,
        statement=f"Training stopped improving at step {f.step_start}: the updates no longer move the "
        "model. Check the schedule (decayed too early?), skipped steps, and the labels.",
        evidence=(f.message,),
        changes=("unstall",),
        explained=(ref(f),),
    )


_logit_drift = _OneFinding(
    cause="output-logit-drift",
    confidence=MEDIUM,
    picks=lambda f: f.kind == "output-logit-drift",
    among_trouble=True,
    unless=lambda cfg, trouble: bool(cfg.get("z_loss")),
    says=lambda f: (
        f"The output softmax normaliser drifts from step {f.step_start}: output "
        "logits grow until the loss saturates in low precision. This is z-loss territory."
    ),
    changes=("z-loss", "lr"),
)


def _unclear(run: RunData, cfg: RunConfig, trouble: Sequence[Finding]) -> Diagnosis:
    f = _first(trouble)
    missing = [
        name
        for metric, name in (
            (GRAD_NORM, "the grad norm"),
            (LR, "the LR"),
            (MAX_ATTN_LOGIT, "the max attention logit"),
        )
        if run.get(metric) is None
    ]
    if not cfg:
        missing.append("the run's config (a config.json beside the log)")
    nxt = f" To tell causes apart, log {', '.join(missing)}." if missing else ""
    return Diagnosis(
        run=run.name,
        cause="unclear",
        confidence=LOW,
        statement=f"The run shows {f.kind} from step {f.step_start}, but the logs do not single out a "
        f"cause.{nxt}",
        evidence=tuple(x.message for x in trouble[:2]),
        changes=("recovery", "lr", "clip"),
    )
