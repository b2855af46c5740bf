"""Automatic analysis of a canary (or blue-green) window: pure functions over metric snapshots.

A window's figures are the difference of two cumulative snapshots of a backend's Prometheus metrics
(:class:`~mlops.deploy.target.MetricsSnapshot`), so the same analysis works on snapshots scraped from
a local server's ``/metrics`` and on sums queried from Prometheus on Kubernetes.

Verdicts, per window:

* ``wait``: the canary has fewer than ``min_requests`` scoring requests: no verdict yet (low traffic
  must neither pass nor fail a canary by accident); the caller extends the window up to ``max_wait_s``
  and then calls it ``inconclusive``;
* ``fail``: any criterion broken, each judged as a one-sided test at ``significance`` (default 1 %),
  so a handful of requests never fails a canary by chance:
  - errors: canary 5xx rate significantly above the allowed rate (``max_error_rate``, and no more than
    stable's rate + ``max_error_rate_increase``), binomial test;
  - latency: significantly more than 5 % of canary requests slower than ``max_p95_ratio`` x stable's
    p95 + ``p95_slack_ms`` (rounded up to a histogram bucket bound), binomial test;
  - predictions: canary score distribution farther than ``max_score_shift`` from stable's
    (Kolmogorov-Smirnov distance between the score histograms) and beyond the KS chance level;
* ``pass`` otherwise.

When stable took no traffic in the window (100 % steps, blue-green after the switch) the canary is
compared with the stable figures of the last window that had both (``reference``), else only the
absolute bounds apply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.deploy.target import SCORING_ROUTES, MetricsSnapshot
from mlops.serving.metrics import HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS, PREDICTION_SCORE

if TYPE_CHECKING:
    from mlops.config.model import AnalysisConfig

WAIT, PASS, FAIL, INCONCLUSIVE = "wait", "pass", "fail", "inconclusive"


def snapshot_from_text(text: str, taken_at: float | None = None) -> MetricsSnapshot:
    """Parse a model server's ``/metrics`` page (Prometheus text format) into a snapshot."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0.0
    latency: dict[float, float] = {}
    score: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == HTTP_REQUESTS:
            for s in fam.samples:
                if s.name.endswith("_total") and s.labels.get("route") in SCORING_ROUTES:
                    requests += s.value
                    if s.labels.get("status", "").startswith("5"):
                        errors += s.value
        elif fam.name == HTTP_REQUEST_DURATION_SECONDS:
            for s in fam.samples:
                if s.name.endswith("_bucket") and s.labels.get("route") in SCORING_ROUTES:
                    le = float(s.labels["le"])
                    latency[le] = latency.get(le, 0.0) + s.value
        elif fam.name == PREDICTION_SCORE:
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    score[le] = score.get(le, 0.0) + s.value
    kw: dict[str, Any] = {} if taken_at is None else {"taken_at": taken_at}
    return MetricsSnapshot(
        requests=requests, errors=errors, latency_buckets=latency, score_buckets=score, **kw
    )


def snapshot_to_dict(s: MetricsSnapshot) -> dict[str, Any]:
    """JSON-safe form (bucket bounds as strings, ``+Inf`` included) for XCom / trigger kwargs."""
    d = asdict(s)
    d["latency_buckets"] = {repr(k): v for k, v in s.latency_buckets.items()}
    d["score_buckets"] = {repr(k): v for k, v in s.score_buckets.items()}
    return d


def snapshot_from_dict(d: dict[str, Any]) -> MetricsSnapshot:
    """A snapshot back from its dict in the rollout state (bucket bounds become floats again)."""
    return MetricsSnapshot(
        requests=float(d["requests"]),
        errors=float(d["errors"]),
        latency_buckets={float(k): float(v) for k, v in d["latency_buckets"].items()},
        score_buckets={float(k): float(v) for k, v in d["score_buckets"].items()},
        taken_at=float(d["taken_at"]),
    )


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated within its bucket like PromQL's
    ``histogram_quantile``; None for an empty histogram. A quantile in the ``+Inf`` bucket is the
    highest finite bound."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def _total(buckets: dict[float, float]) -> float:
    return buckets.get(math.inf, max(buckets.values(), default=0.0))


def binomial_excess(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how surprising ``k`` events in ``n`` are if the rate is ``p``."""
    from scipy.stats import binom

    k, n = round(k), round(n)
    if k <= 0 or n <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    return float(binom.sf(k - 1, n, p))


def slower_than(buckets: dict[float, float], bound_s: float) -> tuple[float, float, float]:
    """(bucket bound used, requests above it, requests): the smallest bucket bound >= ``bound_s``,
    so the count never blames the histogram's resolution on the canary."""
    if not buckets:
        return bound_s, 0.0, 0.0
    total = _total(buckets)
    le = min((b for b in buckets if b >= bound_s), default=math.inf)
    return le, (total - buckets[le]) if not math.isinf(le) else 0.0, total


def ks_critical(n: float, m: float, alpha: float) -> float:
    """Two-sample KS distance exceeded by chance with probability ``alpha`` (asymptotic)."""
    if n <= 0 or m <= 0:
        return 1.0
    return math.sqrt(-0.5 * math.log(alpha / 2.0)) * math.sqrt((n + m) / (n * m))


def histogram_ks_distance(a: dict[float, float], b: dict[float, float]) -> float | None:
    """Largest difference of the two cumulative distributions at the shared bucket bounds (0..1)."""
    if not a or not b:
        return None
    ta, tb = a.get(math.inf, max(a.values())), b.get(math.inf, max(b.values()))
    if ta <= 0 or tb <= 0:
        return None
    return max(abs(a.get(le, 0.0) / ta - b.get(le, 0.0) / tb) for le in set(a) | set(b))


@dataclass(frozen=True)
class WindowFigures:
    """What one backend did in one window."""

    requests: float
    errors: float
    error_rate: float | None
    p95_ms: float | None
    seconds: float

    @classmethod
    def of(cls, delta: MetricsSnapshot, seconds: float) -> WindowFigures:
        """The figures of one backend from its metrics ``delta`` over a window of ``seconds``."""
        p95 = histogram_quantile(0.95, delta.latency_buckets)
        return cls(
            requests=delta.requests,
            errors=delta.errors,
            error_rate=(delta.errors / delta.requests) if delta.requests else None,
            p95_ms=None if p95 is None else round(p95 * 1000.0, 3),
            seconds=round(seconds, 3),
        )


@dataclass(frozen=True)
class WindowVerdict:
    """The verdict on one analysis window (wait, pass or fail), with its reasons and figures."""

    decision: str  # wait | pass | fail
    reasons: list[str]
    canary: WindowFigures
    stable: WindowFigures | None
    score_shift: float | None
    compared_with: str  # "stable" (same window), "reference" (an earlier window) or "bounds"
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (all fields)."""
        return asdict(self)


def analyze_window(
    canary: MetricsSnapshot,
    stable: MetricsSnapshot | None,
    policy: AnalysisConfig,
    seconds: float,
    reference: WindowFigures | None = None,
    reference_scores: dict[float, float] | None = None,
) -> WindowVerdict:
    """Judge one window from the canary's and stable's deltas (``stable`` None: no stable traffic)."""
    c = WindowFigures.of(canary, seconds)
    s = WindowFigures.of(stable, seconds) if stable is not None and stable.requests > 0 else None
    base, compared = (s, "stable") if s is not None else (reference, "reference" if reference else "bounds")
    base_scores = stable.score_buckets if s is not None and stable is not None else reference_scores
    if c.requests < policy.min_requests:
        return WindowVerdict(
            WAIT,
            [f"only {c.requests:.0f} canary requests of the {policy.min_requests} a verdict needs"],
            c,
            s,
            None,
            compared,
        )
    reasons: list[str] = []
    failed = False
    alpha = policy.significance
    rate = c.error_rate or 0.0
    allowed = policy.max_error_rate
    if base is not None and base.error_rate is not None:
        allowed = min(allowed, base.error_rate + policy.max_error_rate_increase)
    p_err = binomial_excess(c.errors, c.requests, allowed)
    if p_err < alpha:
        failed = True
        reasons.append(
            f"canary error rate {rate:.2%} ({c.errors:.0f}/{c.requests:.0f}) significantly above the "
            f"{allowed:.2%} allowed (p={p_err:.2g})"
        )
    if base is not None and base.p95_ms is not None:
        bound_s = (base.p95_ms * policy.max_p95_ratio + policy.p95_slack_ms) / 1000.0
        le, slow, n = slower_than(canary.latency_buckets, bound_s)
        p_slow = binomial_excess(slow, n, 0.05)
        if p_slow < alpha:
            failed = True
            reasons.append(
                f"canary slower: {slow:.0f}/{n:.0f} requests over {le * 1000:.0f} ms "
                f"(>= stable p95 {base.p95_ms:.1f} ms x {policy.max_p95_ratio} + {policy.p95_slack_ms} ms), "
                f"significantly more than 5% (p={p_slow:.2g}); canary p95 {c.p95_ms} ms"
            )
    shift = histogram_ks_distance(canary.score_buckets, base_scores) if base_scores else None
    if shift is not None and shift > policy.max_score_shift:
        crit = ks_critical(_total(canary.score_buckets), _total(base_scores or {}), alpha)
        if shift > crit:
            failed = True
            reasons.append(
                f"canary score distribution shifted by {shift:.3f} (KS distance) > {policy.max_score_shift} "
                f"and above the {crit:.3f} chance level at these counts"
            )
    if not failed:
        reasons.append(
            f"canary {c.requests:.0f} requests, error rate {rate:.2%}, p95 {c.p95_ms} ms"
            + (f", score shift {shift:.3f}" if shift is not None else "")
            + (f"; compared with {compared}" if base is not None else "; absolute bounds only")
        )
    return WindowVerdict(FAIL if failed else PASS, reasons, c, s, shift, compared)
