"""The drift HTML report: its counts agree with the verdict, the score is labelled apart, nothing external."""

from __future__ import annotations

import re

import numpy as np
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.data.report_html import external_references
from mlops.demo.datagen import generate_churn
from mlops.drift.detect import detect
from mlops.drift.profile import ReferenceProfile
from mlops.drift.report import render_html

CFG = get_model_config("churn", BUILTIN_MODELS_DIR)
NUM, CAT = CFG.features.numeric, CFG.features.categorical


def _result(score_drifts: bool):
    rng = np.random.default_rng(0)
    prof = ReferenceProfile.from_frame(generate_churn(4000, seed=1), NUM, CAT, score=rng.beta(2, 5, 4000))
    current = rng.beta(5, 2, 2000) if score_drifts else rng.beta(2, 5, 2000)
    return detect(prof, generate_churn(2000, seed=2, drift=1.0), score=current)


def test_heading_counts_features_as_the_verdict_does_and_the_score_apart():
    """Regression: "6 of 20 features drifted" came under "Drifted features (7)": the drifted score was
    counted as a feature in the heading only."""
    res = _result(score_drifts=True)
    assert res.score.drifted and res.drifted_features
    html = render_html(res)
    n, tested = len(res.drifted_features), sum(f.status != "insufficient_data" for f in res.features)
    verdict = re.search(r"(\d+) of (\d+) features drifted", res.message)
    assert verdict is not None and (int(verdict.group(1)), int(verdict.group(2))) == (n, tested)
    assert f'<h2 id="drifted-features">Drifted features: {n} of {tested} tested</h2>' in html
    assert '<h2 id="prediction-score">Prediction score (score): drifted</h2>' in html
    features_part, score_part = html.split('id="prediction-score"')[0], html.split('id="prediction-score"')[1]
    assert features_part.count('class="chart"') == n and 'id="chart-score"' not in features_part
    score_part = score_part.split("<h2>All features")[0]
    assert score_part.count('class="chart"') == 1 and 'id="chart-score"' in score_part
    assert "<h2>All features and the prediction score</h2>" in html
    assert external_references(html) == [] and "<script" not in html


def test_undrifted_score_is_reported_without_a_chart():
    res = _result(score_drifts=False)
    html = render_html(res)
    assert not res.score.drifted
    assert '<h2 id="prediction-score">Prediction score (score): no drift</h2>' in html
    assert 'id="chart-score"' not in html
    assert html.count("<svg") == len(res.drifted_features)


def test_report_without_score_has_no_score_section():
    prof = ReferenceProfile.from_frame(generate_churn(3000, seed=1), NUM, CAT)
    res = detect(prof, generate_churn(1500, seed=3))
    html = render_html(res)
    assert 'id="prediction-score"' not in html and "<h2>All features</h2>" in html
    tested = sum(f.status != "insufficient_data" for f in res.features)
    assert f"Drifted features: {len(res.drifted_features)} of {tested} tested" in html
