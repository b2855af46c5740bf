"""Holdout evaluation: metrics, the paired bootstrap, and champion-vs-challenger on the same rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops.metrics import ConfidenceInterval, gain

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.config.model import ModelConfig

#: Bootstrap on at most this many holdout rows (a random subset): keeps the gate fast on 1M-row sets.
BOOTSTRAP_MAX_ROWS = 50_000


def classification_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Holdout metrics of ``proba`` against labels ``y``, classes cut at ``threshold`` where needed."""
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        roc_auc_score,
    )

    pred = (proba >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y, proba)),
        "accuracy": float(accuracy_score(y, pred)),
        "positive_rate": float(np.mean(y)),
    }


def metric_safe(text: str) -> str:
    """A data value made safe for an MLflow metric name (letters, digits, ``_ - . /``)."""
    import re

    return re.sub(r"[^0-9A-Za-z_\-./]+", "_", text).strip("_") or "blank"


def segment_metrics(
    X: pd.DataFrame, y: np.ndarray, proba: np.ndarray, segments: list[str]
) -> dict[str, float]:
    """ROC AUC per value of each segment column: ``roc_auc__<segment>__<value>``."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    out = {}
    y = np.asarray(y)
    for seg in segments:
        values = X[seg].astype(str).to_numpy()
        for value in np.unique(values):
            mask = values == value
            if len(np.unique(y[mask])) == 2:
                out[f"roc_auc__{seg}__{metric_safe(value)}"] = float(roc_auc_score(y[mask], proba[mask]))
    return out


def _weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of ``weights`` (B x n resampling weights), ties counted half. O(B n)."""
    import numpy as np

    order = np.argsort(score, kind="mergesort")
    s, yy, w = score[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of equal scores
    wpos = np.add.reduceat(w * (yy == 1), starts, axis=1)
    wneg = np.add.reduceat(w * (yy == 0), starts, axis=1)
    neg_below = np.cumsum(wneg, axis=1) - wneg
    num = (wpos * (neg_below + 0.5 * wneg)).sum(axis=1)
    den = wpos.sum(axis=1) * wneg.sum(axis=1)
    return num / np.where(den > 0, den, np.nan)


def paired_bootstrap(
    y: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    metric: str = "roc_auc",
    samples: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> ConfidenceInterval:
    """Interval of ``gain(metric, new, old)`` over resamples of the same rows for both models.

    ROC AUC uses vectorised Poisson-bootstrap weights; other metrics resample indices.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    y, new, old = np.asarray(y), np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    if len(y) > BOOTSTRAP_MAX_ROWS:
        keep = rng.choice(len(y), BOOTSTRAP_MAX_ROWS, replace=False)
        y, new, old = y[keep], new[keep], old[keep]
    diffs = []
    if metric == "roc_auc":
        chunk = max(1, 20_000_000 // max(len(y), 1))
        done = 0
        while done < samples:
            b = min(chunk, samples - done)
            w = rng.poisson(1.0, size=(b, len(y))).astype(np.float32)
            diffs.append(_weighted_auc(y, new, w) - _weighted_auc(y, old, w))
            done += b
        d = np.concatenate(diffs)
    else:
        vals = []
        for _ in range(samples):
            idx = rng.integers(0, len(y), len(y))
            if len(np.unique(y[idx])) < 2:
                continue
            m_new = classification_metrics(y[idx], new[idx], threshold)[metric]
            m_old = classification_metrics(y[idx], old[idx], threshold)[metric]
            vals.append(gain(metric, m_new, m_old))
        d = np.asarray(vals)
    d = d[~np.isnan(d)]
    alpha = (1.0 - confidence) / 2
    return ConfidenceInterval(
        metric=metric,
        low=float(np.quantile(d, alpha)),
        high=float(np.quantile(d, 1 - alpha)),
        confidence=confidence,
        samples=int(len(d)),
    )


def positive_proba(model, X: pd.DataFrame):
    """Probability of the positive class from a scikit-learn model or an MLflow pyfunc wrapper."""
    import numpy as np

    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X))[:, 1]
    raise TypeError(f"model {type(model).__name__} has no predict_proba")


def holdout_scores(cfg: ModelConfig, tracking_uri: str, model_uri: str, holdout: pd.DataFrame):
    """Load ``model_uri`` (scikit-learn flavour) from ``tracking_uri`` and score the holdout's features."""
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(tracking_uri)  # `models:/` URIs resolve against the global registry URI
    model = mlflow.sklearn.load_model(model_uri)
    return positive_proba(model, holdout[cfg.features.all])
