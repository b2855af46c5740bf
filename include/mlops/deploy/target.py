"""The interface every deployment target implements, and the metrics it reports.

A target runs model servers in *roles* (``stable``: the champion taking traffic; ``canary`` or
``green``: a candidate; ``previous``: a former stable kept warm for an instant rollback) behind one
user-facing endpoint, and splits that endpoint's traffic between roles by weight (percent). The
rollout policy (:mod:`mlops.deploy.rollout`) only talks to this interface, so the same policy drives
the local target (processes and a routing proxy on this machine) and the kubernetes target
(Deployments behind one Service).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

STABLE = "stable"
CANARY = "canary"
GREEN = "green"
PREVIOUS = "previous"
ROLES = (STABLE, CANARY, GREEN, PREVIOUS)

#: HTTP routes whose requests count as scoring traffic in an analysis.
SCORING_ROUTES = ("/invocations", "/predict")


class DeploymentError(RuntimeError):
    """A target could not do what was asked; the message says what and where to look."""


@dataclass(frozen=True)
class Backend:
    """One model server (or set of replicas) in a role."""

    role: str
    version: str
    #: Base URL of this backend alone, reachable from where the rollout runs (smoke tests, metrics).
    url: str
    #: Image by digest (``repo@sha256:...``) on container targets; None where the model is loaded from MLflow.
    image: str | None = None


@dataclass(frozen=True)
class MetricsSnapshot:
    """Cumulative serving counters of one backend at one moment (Prometheus counters/histograms).

    ``latency_buckets`` and ``score_buckets`` map each histogram bucket's upper bound (``le``, with
    ``float('inf')``) to its cumulative count, as Prometheus exposes them. Only scoring routes count.
    """

    requests: float = 0.0
    errors: float = 0.0  # responses with status >= 500 on scoring routes
    latency_buckets: dict[float, float] = field(default_factory=dict)
    score_buckets: dict[float, float] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)

    def minus(self, earlier: MetricsSnapshot) -> MetricsSnapshot:
        """What happened between ``earlier`` and this snapshot (a counter reset counts from zero)."""

        def sub(a: float, b: float) -> float:
            return a - b if a >= b else a

        def sub_buckets(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
            return {le: sub(v, b.get(le, 0.0)) for le, v in a.items()}

        return dataclasses.replace(
            self,
            requests=sub(self.requests, earlier.requests),
            errors=sub(self.errors, earlier.errors),
            latency_buckets=sub_buckets(self.latency_buckets, earlier.latency_buckets),
            score_buckets=sub_buckets(self.score_buckets, earlier.score_buckets),
        )


@runtime_checkable
class DeploymentTarget(Protocol):
    """Where model versions run. Every method is idempotent where that makes sense."""

    #: ``local`` or ``kubernetes``.
    kind: str

    def endpoint(self) -> str:
        """The user-facing URL (the one clients call; traffic there is split by weight)."""
        ...

    def backends(self) -> dict[str, Backend]:
        """Backends by role, as deployed now."""
        ...

    def weights(self) -> dict[str, int]:
        """Traffic weight (percent) per role; roles not listed get 0."""
        ...

    def deploy(self, role: str, version: str, image: str | None = None) -> Backend:
        """Start ``version`` in ``role`` at weight 0 (replacing what ran in that role, if it took no
        traffic) and return once it is ready; raise :class:`DeploymentError` if it never is."""
        ...

    def set_weights(self, weights: dict[str, int]) -> None:
        """Split traffic between deployed roles: integers >= 0 summing to 100."""
        ...

    def promote(self, role: str, keep_previous: bool = False) -> None:
        """Make ``role`` the ``stable`` backend at 100 %. The former stable is kept at weight 0 as
        ``previous`` when ``keep_previous`` (blue-green: instant rollback), otherwise removed."""
        ...

    def remove(self, role: str) -> None:
        """Stop the backend in ``role`` (it must take no traffic). Removing an absent role is a no-op."""
        ...

    def snapshot(self, role: str) -> MetricsSnapshot:
        """Cumulative serving metrics of the backend in ``role``."""
        ...
