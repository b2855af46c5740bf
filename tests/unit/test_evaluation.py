from __future__ import annotations

import numpy as np
import pytest
from mlops.training.evaluation import _weighted_auc, paired_bootstrap
from sklearn.metrics import roc_auc_score


def _data(n=2000, seed=0, signal_new=1.5, signal_old=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    new = y * signal_new + rng.normal(size=n)
    old = y * signal_old + rng.normal(size=n)
    return y, new, old


def test_weighted_auc_with_unit_weights_equals_sklearn_including_ties():
    y, s, _ = _data(500)
    s = np.round(s, 1)  # many ties
    w = np.ones((1, len(y)))
    assert _weighted_auc(y, s, w)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_weighted_auc_with_integer_weights_equals_repeated_rows():
    y, s, _ = _data(300, seed=3)
    w = np.random.default_rng(1).poisson(1.0, size=(1, len(y)))
    rep = np.repeat(np.arange(len(y)), w[0])
    assert _weighted_auc(y, s, w.astype(float))[0] == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-12)


def test_clearly_better_model_has_interval_above_zero():
    y, new, old = _data(3000, signal_new=2.0, signal_old=0.8)
    ci = paired_bootstrap(y, new, old, samples=300, seed=1)
    assert ci.low > 0.05 and ci.high > ci.low and ci.samples == 300


def test_identical_models_interval_contains_zero_so_noise_does_not_promote():
    y, new, _ = _data(3000)
    noisy_twin = new + np.random.default_rng(9).normal(scale=0.05, size=len(new))
    ci = paired_bootstrap(y, new, noisy_twin, samples=300, seed=2)
    assert ci.low < 0 < ci.high


def test_other_metrics_use_index_resampling_with_direction():
    y, new, old = _data(1500, signal_new=2.0, signal_old=0.5)
    p_new, p_old = 1 / (1 + np.exp(-new)), 1 / (1 + np.exp(-old))
    ci = paired_bootstrap(y, p_new, p_old, metric="log_loss", samples=100, seed=3)
    assert ci.low > 0  # lower log loss = a positive gain
