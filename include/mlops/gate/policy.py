"""The metric gate: a pure function from metrics to a decision with reasons (no MLflow, no Airflow).

Three kinds of checks, after TFX's Evaluator and MLflow's ``validate_evaluation_results``:

* value thresholds: absolute bounds per metric (``min`` / ``max``);
* change thresholds against ``@champion`` evaluated on the same holdout: the primary metric must
  improve by at least ``min_improvement``, with a paired-bootstrap confidence interval of the
  difference that excludes zero (so noise alone never promotes), and the other metrics may worsen by
  at most ``max_regression``. A negative ``min_improvement`` is a non-inferiority margin instead: the
  interval's lower end must not fall below it (used for alert-driven retrains, whose point is a model
  that matches today's population, not a higher score on a mixed holdout);
* an overfitting check: train minus holdout of the primary metric at most ``max_overfit_gap``.

No champion yet: value thresholds and the overfitting check only. Each check's reason reads as a
sentence; the same text goes to the task log and to the model version.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeGuard

from mlops.metrics import ConfidenceInterval, gain


def _is_number(x: object) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)


@dataclass(frozen=True)
class Bound:
    """An absolute bound on one metric: ``value >= limit`` (kind ``min``) or ``<= limit`` (``max``)."""

    metric: str
    kind: Literal["min", "max"]
    limit: float

    def __post_init__(self) -> None:
        if self.kind not in ("min", "max"):
            raise ValueError(f"bound kind must be 'min' or 'max', got {self.kind!r}")
        if not _is_number(self.limit):
            raise ValueError(f"bound on {self.metric!r} needs a numeric limit, got {self.limit!r}")


@dataclass(frozen=True)
class GatePolicy:
    """What a candidate must satisfy: bounds, a gain over the champion, few regressions, no overfitting."""

    primary_metric: str = "roc_auc"
    bounds: tuple[Bound, ...] = ()
    min_improvement: float = 0.0
    max_regression: dict[str, float] = field(default_factory=dict)
    max_overfit_gap: float | None = 0.1

    def __post_init__(self) -> None:
        if not _is_number(self.min_improvement):
            raise ValueError(f"min_improvement must be a number, got {self.min_improvement!r}")
        for m, v in self.max_regression.items():
            if not _is_number(v) or v < 0:
                raise ValueError(f"max_regression[{m!r}] must be a number >= 0, got {v!r}")
        if self.max_overfit_gap is not None and not _is_number(self.max_overfit_gap):
            raise ValueError(f"max_overfit_gap must be a number or None, got {self.max_overfit_gap!r}")

    @classmethod
    def from_config(cls, gate: Any) -> GatePolicy:
        """From a :class:`mlops.config.model.GateConfig` (or anything with the same attributes)."""
        return cls(
            primary_metric=gate.primary_metric,
            bounds=tuple(bounds_from_config(gate.min, gate.max)),
            min_improvement=float(gate.min_improvement),
            max_regression={k: float(v) for k, v in gate.max_regression.items()},
            max_overfit_gap=gate.max_overfit_gap,
        )


@dataclass(frozen=True)
class Check:
    """One check of the gate: its name, whether it holds, and why (a sentence)."""

    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    """The gate's decision with every check behind it; ``str()`` reads as a sentence."""

    passed: bool
    checks: tuple[Check, ...] = field(default_factory=tuple)
    champion_version: str | None = None

    @property
    def decision(self) -> str:
        """``passed`` or ``failed``."""
        return "passed" if self.passed else "failed"

    @property
    def reasons(self) -> list[str]:
        """The reason of every check, in order."""
        return [c.reason for c in self.checks]

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that do not hold."""
        return [c.name for c in self.checks if not c.passed]

    def __str__(self) -> str:
        failed = [c.reason for c in self.checks if not c.passed]
        if self.passed:
            return f"Gate passed: all {len(self.checks)} checks hold."
        return f"Gate failed ({len(failed)} of {len(self.checks)} checks): " + " ".join(failed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: the decision, the champion's version and every check."""
        return {
            "decision": self.decision,
            "champion_version": self.champion_version,
            "checks": [asdict(c) for c in self.checks],
        }

    def to_json(self) -> str:
        """The :meth:`to_dict` form as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def bounds_from_config(min_bounds: dict[str, float], max_bounds: dict[str, float]) -> list[Bound]:
    """The bounds of a model config's ``gate.min`` and ``gate.max`` maps."""
    return [Bound(m, "min", float(v)) for m, v in min_bounds.items()] + [
        Bound(m, "max", float(v)) for m, v in max_bounds.items()
    ]


def _bound_checks(metrics: dict[str, float], bounds: tuple[Bound, ...] | list[Bound]) -> list[Check]:
    checks = []
    for b in bounds:
        name = f"{b.kind}:{b.metric}"
        value = metrics.get(b.metric)
        if not _is_number(value):
            checks.append(
                Check(name, False, f"{b.metric} is missing, so its {b.kind} bound {b.limit:g} cannot hold.")
            )
            continue
        ok = value >= b.limit if b.kind == "min" else value <= b.limit
        rel = ">=" if b.kind == "min" else "<="
        verdict = "holds" if ok else "does not hold"
        checks.append(Check(name, ok, f"{b.metric} = {value:.4f} {verdict} ({rel} {b.limit:g} required)."))
    return checks


def evaluate_gate(
    policy: GatePolicy,
    candidate: dict[str, float],
    *,
    train: dict[str, float] | None = None,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
    ci: ConfidenceInterval | None = None,
) -> GateResult:
    """Judge a candidate's holdout metrics. ``champion`` are the champion's metrics on the same holdout."""
    # Long by design: the gate's checks one after another, each adding to the same record, in the order the
    # record lists them.
    pm = policy.primary_metric
    checks = _bound_checks(candidate, policy.bounds)

    if policy.max_overfit_gap is not None:
        tr, ho = (train or {}).get(pm), candidate.get(pm)
        if _is_number(tr) and _is_number(ho):
            gap = gain(pm, tr, ho)
            ok = gap <= policy.max_overfit_gap
            checks.append(
                Check(
                    "overfit",
                    ok,
                    f"train - holdout {pm} gap is {gap:+.4f} ({'within' if ok else 'over'} the "
                    f"{policy.max_overfit_gap:g} allowed).",
                )
            )
        else:
            checks.append(
                Check(
                    "overfit", False, f"train or holdout {pm} is missing, so overfitting cannot be ruled out."
                )
            )

    if champion is None:
        checks.append(Check("champion", True, "There is no @champion yet, so only absolute bounds apply."))
    else:
        who = f"champion v{champion_version}" if champion_version else "the champion"
        new, old = candidate.get(pm), champion.get(pm)
        if not (_is_number(new) and _is_number(old)):
            checks.append(Check(f"improvement:{pm}", False, f"{pm} is missing for the candidate or {who}."))
        else:
            d = gain(pm, new, old)
            ok = d >= policy.min_improvement
            checks.append(
                Check(
                    f"improvement:{pm}",
                    ok,
                    f"{pm} {'improves on' if d > 0 else 'does not improve on'} {who} by {d:+.4f} "
                    f"({new:.4f} vs {old:.4f}; at least {policy.min_improvement:+.4f} required).",
                )
            )
            if ci is not None:
                interval = (
                    f"the {ci.confidence:.0%} bootstrap interval of the {pm} gain is "
                    f"[{ci.low:+.4f}, {ci.high:+.4f}] over {ci.samples} resamples: "
                )
                if policy.min_improvement < 0:  # a non-inferiority margin (alert-driven retrains)
                    ok = ci.low >= policy.min_improvement
                    why = (
                        f"at worst {-policy.min_improvement:.4f} below {who}, within the non-inferiority margin."
                        if ok
                        else f"it may be more than {-policy.min_improvement:.4f} worse than {who}."
                    )
                else:
                    ok = ci.low > 0 and ci.low >= policy.min_improvement
                    why = "the gain is not noise." if ok else "the gain may be noise, so it does not promote."
                checks.append(Check(f"confidence:{pm}", ok, interval + why))
        for metric, allowed in policy.max_regression.items():
            new_m, old_m = candidate.get(metric), champion.get(metric)
            if not (_is_number(new_m) and _is_number(old_m)):
                checks.append(
                    Check(f"regression:{metric}", False, f"{metric} is missing for the candidate or {who}.")
                )
                continue
            worse = -gain(metric, new_m, old_m)
            ok = worse <= allowed
            checks.append(
                Check(
                    f"regression:{metric}",
                    ok,
                    f"{metric} is {new_m:.4f} vs {old_m:.4f} for {who}: "
                    + (f"worse by {worse:.4f}" if worse > 0 else "not worse")
                    + f" ({'within' if ok else 'over'} the {allowed:g} allowed).",
                )
            )
    return GateResult(
        passed=all(c.passed for c in checks), checks=tuple(checks), champion_version=champion_version
    )
