"""The metric gate: a pure function from metrics and thresholds to a decision with reasons.

No MLflow, no Airflow: the caller fetches metrics and records the result. Each reason reads as a
sentence, so the same text goes to the task log and to the model version.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Literal


class GateFailed(Exception):
    """The candidate model did not pass the gate (a rejected model, not a crash)."""

    def __init__(self, result: GateResult):
        super().__init__(str(result))
        self.result = result


@dataclass(frozen=True)
class Bound:
    """An absolute bound on one metric: ``value >= limit`` (kind ``min``) or ``<= limit`` (``max``)."""

    metric: str
    kind: Literal["min", "max"]
    limit: float

    def __post_init__(self) -> None:
        if self.kind not in ("min", "max"):
            raise ValueError(f"bound kind must be 'min' or 'max', got {self.kind!r}")
        if not isinstance(self.limit, int | float) or math.isnan(self.limit):
            raise ValueError(f"bound on {self.metric!r} needs a numeric limit, got {self.limit!r}")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks]

    def __str__(self) -> str:
        failed = [c.reason for c in self.checks if not c.passed]
        if self.passed:
            return f"Gate passed: all {len(self.checks)} checks hold."
        return f"Gate failed ({len(failed)} of {len(self.checks)} checks): " + " ".join(failed)

    def to_json(self) -> str:
        return json.dumps({"decision": self.decision, "checks": [asdict(c) for c in self.checks]}, indent=2)


def bounds_from_config(min_bounds: dict[str, float], max_bounds: dict[str, float]) -> list[Bound]:
    return [Bound(m, "min", float(v)) for m, v in min_bounds.items()] + [
        Bound(m, "max", float(v)) for m, v in max_bounds.items()
    ]


def validate_metrics(metrics: dict[str, float], bounds: list[Bound]) -> GateResult:
    """Check every bound against ``metrics``. A metric that is missing or NaN fails its bound."""
    checks = []
    for b in bounds:
        name = f"{b.kind}:{b.metric}"
        value = metrics.get(b.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append(
                Check(name, False, f"{b.metric} is missing, so its {b.kind} bound {b.limit:g} cannot hold.")
            )
            continue
        ok = value >= b.limit if b.kind == "min" else value <= b.limit
        rel = ">=" if b.kind == "min" else "<="
        verdict = "holds" if ok else "does not hold"
        checks.append(Check(name, ok, f"{b.metric} = {value:.4f} {verdict} ({rel} {b.limit:g} required)."))
    return GateResult(passed=all(c.passed for c in checks), checks=tuple(checks))
