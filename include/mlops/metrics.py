"""The metric vocabulary shared by the model configs, training and the gate, defined once.

Which metrics the platform computes (:data:`METRICS`), which of them are better when lower, how much
better one value is than another (:func:`gain`), and the paired-bootstrap interval of that gain
(:class:`ConfidenceInterval`). No imports: every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass

METRICS = frozenset({"roc_auc", "pr_auc", "f1", "log_loss", "brier", "accuracy", "positive_rate"})
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def gain(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` (positive = better), whatever the metric's direction."""
    return (old - new) if metric in LOWER_IS_BETTER else (new - old)


@dataclass(frozen=True)
class ConfidenceInterval:
    """Paired-bootstrap interval of ``candidate - champion`` for one metric (higher-is-better sign)."""

    metric: str
    low: float
    high: float
    confidence: float
    samples: int
