"""Drift detection: false-alarm control, real shifts caught, sample guard, profile JSON, bad input,
the HTML report and the ``mlops drift`` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlops.cli import main
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.demo.datagen import DRIFTED_FEATURES, generate_churn, write_frame
from mlops.drift.detect import DriftThresholds, detect
from mlops.drift.profile import DriftInputError, ReferenceProfile
from mlops.drift.report import write_report
from scipy import stats

CFG = get_model_config("churn", BUILTIN_MODELS_DIR)
NUM, CAT = CFG.features.numeric, CFG.features.categorical


def churn_profile(rows: int = 5000, seed: int = 1, **kw) -> ReferenceProfile:
    return ReferenceProfile.from_frame(generate_churn(rows, seed=seed), NUM, CAT, **kw)


def frame(n: int, seed: int, mean: float = 0.0, mix=(0.5, 0.3, 0.2), new_share: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cat = rng.choice(np.array(["a", "b", "c"], dtype=object), n, p=list(mix))
    cat[rng.random(n) < new_share] = "brand-new"
    return pd.DataFrame(
        {"x": rng.normal(mean, 1.0, n), "k": rng.poisson(3, n), "cat": cat, "y": rng.choice(["u", "v"], n)}
    )


def simple_profile(n: int = 20000, seed: int = 0, **kw) -> ReferenceProfile:
    return ReferenceProfile.from_frame(frame(n, seed), ["x", "k"], ["cat", "y"], **kw)


# --------------------------------------------------------------------------- false alarms


def test_no_drift_false_alarm_rate_is_within_the_stated_5_percent():
    """200 independent reference/current pairs from the same distribution (churn, 20 features):
    the share of runs where any feature is flagged must not exceed fdr_q = 5 %."""
    seeds = 200
    any_flag = dataset_alarm = 0
    for s in range(seeds):
        prof = ReferenceProfile.from_frame(generate_churn(600, seed=10_000 + s), NUM, CAT)
        res = detect(prof, generate_churn(400, seed=20_000 + s))
        any_flag += bool(res.drifted_features)
        dataset_alarm += res.status == "drift"
        assert res.status in ("drift", "no_drift")
    assert any_flag <= 0.05 * seeds, f"{any_flag} of {seeds} no-drift runs flagged a feature"
    assert dataset_alarm <= any_flag


def test_tiny_shift_at_large_n_is_significant_but_not_drift():
    """At 200k rows a 0.02 sd shift has a tiny p-value; the effect-size threshold keeps it quiet."""
    prof = simple_profile(200_000, seed=1)
    res = detect(prof, frame(200_000, seed=2, mean=0.02))
    x = next(f for f in res.features if f.name == "x")
    assert x.significant and x.p_adjusted < 1e-6
    assert x.statistic < 0.1 and x.psi < 0.2
    assert not x.drifted and res.status == "no_drift"


# --------------------------------------------------------------------------- real shifts


def test_churn_drift_flags_exactly_the_documented_features():
    res = detect(churn_profile(5000, seed=1), generate_churn(3000, seed=2, drift=1.0))
    assert set(res.drifted_features) == set(DRIFTED_FEATURES)
    assert res.status == "drift" and res.is_drift
    assert "DRIFT" in str(res)


def test_numeric_mean_shift_caught_with_ks_matching_scipy():
    prof = simple_profile(400, seed=1)  # at most 501 distinct values: the sketch is the exact ECDF
    assert prof.numeric["x"].exact
    cur = frame(2000, seed=2, mean=0.5)
    res = detect(prof, cur)
    x = next(f for f in res.features if f.name == "x")
    assert x.drifted and "ks>=0.1" in x.effects_over
    ref = frame(400, seed=1)
    exact = stats.ks_2samp(ref["x"], cur["x"])
    assert x.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert set(res.drifted_features) == {"x"}


def test_sketch_ks_is_within_one_over_sketch_size_of_the_exact_statistic():
    prof = simple_profile(50_000, seed=3)
    assert not prof.numeric["x"].exact and len(prof.numeric["x"].values) == 501
    ref, cur = frame(50_000, seed=3), frame(20_000, seed=4, mean=0.05)
    d = next(f for f in detect(prof, cur).features if f.name == "x").statistic
    exact = stats.ks_2samp(ref["x"], cur["x"]).statistic
    assert exact - 1 / 500 <= d <= exact + 1e-12


def test_categorical_mix_change_caught():
    res = detect(simple_profile(), frame(5000, seed=5, mix=(0.3, 0.3, 0.4)))
    cat = next(f for f in res.features if f.name == "cat")
    assert cat.drifted and cat.test == "chi2" and cat.js >= 0.1 and cat.psi >= 0.2
    assert res.drifted_features == ["cat"]


def test_unseen_category_is_counted_named_and_caught():
    res = detect(simple_profile(), frame(5000, seed=6, new_share=0.10))
    cat = next(f for f in res.features if f.name == "cat")
    assert cat.drifted
    assert set(cat.unseen) == {"brand-new"} and 400 < cat.unseen["brand-new"] < 600
    assert cat.unseen_share == pytest.approx(cat.unseen["brand-new"] / 5000)
    assert "brand-new" in cat.reason


def test_rare_unseen_category_is_named_without_alarm():
    res = detect(simple_profile(), frame(5000, seed=7, new_share=0.002))
    cat = next(f for f in res.features if f.name == "cat")
    assert "brand-new" in cat.unseen and not cat.drifted


def test_prediction_score_drift_and_importance_weighting():
    rng = np.random.default_rng(0)
    ref = frame(5000, seed=8)
    prof = ReferenceProfile.from_frame(ref, ["x", "k"], ["cat", "y"], score=rng.beta(2, 5, 5000))
    cur = frame(5000, seed=9)
    res = detect(prof, cur, score=rng.beta(2, 5, 5000))
    assert res.status == "no_drift" and not res.score.drifted
    res = detect(prof, cur, score=rng.beta(5, 2, 5000))
    assert res.score.drifted and res.status == "drift" and res.drifted_features == []
    assert "score drifted" in res.message

    shifted = frame(5000, seed=10, mean=0.5)  # only x drifts: 1 of 4 features
    light = {"x": 0.1, "k": 1.0, "cat": 1.0, "y": 1.0}
    res = detect(prof, shifted, feature_importance=light, thresholds=DriftThresholds(drift_share=0.3))
    assert res.drifted_features == ["x"] and res.weighted and res.status == "no_drift"
    res = detect(prof, shifted, feature_importance={"x": 5.0}, thresholds=DriftThresholds(drift_share=0.3))
    assert res.status == "drift" and res.drifted_share == pytest.approx(1.0)


# --------------------------------------------------------------------------- minimum sample


def test_insufficient_current_or_reference_rows_never_alarm():
    prof = churn_profile(5000)
    res = detect(prof, generate_churn(150, seed=3, drift=3.0))
    assert res.status == "insufficient_data" and res.drifted_features == []
    assert all(f.status == "insufficient_data" for f in res.features)
    assert "150 current rows" in res.message
    small = churn_profile(150)
    assert detect(small, generate_churn(5000, seed=3, drift=3.0)).status == "insufficient_data"
    assert detect(prof, generate_churn(150, seed=3), thresholds=DriftThresholds(min_rows=100)).status in (
        "drift",
        "no_drift",
    )


def test_feature_without_enough_values_is_left_out():
    cur = frame(5000, seed=11)
    cur["x"] = np.nan
    res = detect(simple_profile(), cur)
    x = next(f for f in res.features if f.name == "x")
    assert x.status == "insufficient_data" and x.missing_share_current == 1.0
    assert res.status == "no_drift"


# --------------------------------------------------------------------------- profile JSON


def test_profile_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    prof = churn_profile(3000, score=rng.random(3000), feature_importance={"monthly_charges": 2.0})
    again = ReferenceProfile.from_json(prof.to_json())
    assert again == prof
    path = prof.save(tmp_path / "sub" / "profile.json")
    assert ReferenceProfile.load(path) == prof
    assert json.loads(path.read_text())["format"] == prof.format
    cur = generate_churn(1000, seed=5, drift=0.5)
    assert detect(again, cur).to_dict() | {"seconds": 0} == detect(prof, cur).to_dict() | {"seconds": 0}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a reference profile"),
        ("[]", "not a reference"),
    ],
)
def test_bad_profile_is_named(text, match):
    with pytest.raises(DriftInputError, match=match):
        ReferenceProfile.from_json(text)


# --------------------------------------------------------------------------- bad input


def test_missing_column_is_named():
    with pytest.raises(DriftInputError, match=r"lacks column\(s\) \['region'\]"):
        detect(churn_profile(500), generate_churn(500, seed=2).drop(columns=["region"]))


def test_wrong_type_is_named():
    cur = generate_churn(500, seed=2)
    cur["age"] = cur["age"].astype(str)
    cur.loc[3, "age"] = "forty"
    with pytest.raises(DriftInputError, match="column 'age' must be numeric.*'forty'"):
        detect(churn_profile(500), cur)
    with pytest.raises(DriftInputError, match="column 'age' must be numeric"):
        detect(churn_profile(500), cur.head(50))  # even when too small to decide


def test_numeric_strings_are_accepted_and_other_misuse_rejected():
    cur = generate_churn(500, seed=2)
    cur["age"] = cur["age"].astype(str)
    assert detect(churn_profile(500), cur).status in ("drift", "no_drift")
    with pytest.raises(DriftInputError, match="must be a pandas DataFrame"):
        detect(churn_profile(500), {"age": [1]})
    with pytest.raises(DriftInputError, match="no score distribution"):
        detect(churn_profile(500), cur, score=np.zeros(500))
    with pytest.raises(ValueError, match="fdr_q"):
        DriftThresholds(fdr_q=0)
    with pytest.raises(ValueError, match="not a profiled feature"):
        churn_profile(500, feature_importance={"nope": 1.0})


# --------------------------------------------------------------------------- report and CLI


def test_report_is_self_contained_and_shows_each_drifted_feature(tmp_path):
    cur = generate_churn(3000, seed=2, drift=1.0)
    cur.loc[:300, "region"] = "atlantis"
    res = detect(churn_profile(5000), cur)
    assert "region" in res.drifted_features
    path = write_report(res, tmp_path / "r" / "drift.html")
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "src=" not in html
    for name in res.drifted_features:
        assert f'id="chart-{name}"' in html
    assert html.count("<svg") == len(res.drifted_features)
    assert "atlantis" in html
    for name in NUM + CAT:  # the table lists every feature
        assert f'<td class="l">{name}</td>' in html


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    train, ok, drifted, small = (tmp_path / f"{n}.parquet" for n in ("train", "ok", "drifted", "small"))
    write_frame(generate_churn(4000, seed=1), train)
    write_frame(generate_churn(2000, seed=2), ok)
    write_frame(generate_churn(2000, seed=3, drift=1.0), drifted)
    write_frame(generate_churn(50, seed=4, drift=1.0), small)
    prof = tmp_path / "profile.json"
    assert main(["drift", "profile", "--train", str(train), "--model", "churn", "--out", str(prof)]) == 0
    assert ReferenceProfile.load(prof).n_rows == 4000

    assert main(["drift", "--reference", str(prof), "--current", str(ok)]) == 0
    report, out = tmp_path / "report.html", tmp_path / "result.json"
    args = ["drift", "--reference", str(prof), "--current", str(drifted), "--report", str(report)]
    assert main([*args, "--json", str(out)]) == 1
    assert set(json.loads(out.read_text())["drifted_features"]) == set(DRIFTED_FEATURES)
    assert "monthly_charges" in report.read_text()
    assert main(["drift", "--reference", str(prof), "--current", str(small)]) == 2
    assert "insufficient data" in capsys.readouterr().out

    csv = tmp_path / "bad.csv"
    generate_churn(300, seed=5).drop(columns=["tenure_months"]).to_csv(csv, index=False)
    assert main(["drift", "--reference", str(prof), "--current", str(csv)]) == 2
    assert "bad.csv lacks column(s) ['tenure_months']" in capsys.readouterr().err
    assert main(["drift", "--reference", str(prof), "--current", str(tmp_path / "x.txt")]) == 2
    assert "unsupported file type '.txt' (use .csv or .parquet)" in capsys.readouterr().err
    assert main(["drift", "--current", str(ok)]) == 2
    assert "needs --reference" in capsys.readouterr().err
    assert main(["drift", "--reference", str(ok), "--current", str(ok)]) == 2
    assert "reference profile" in capsys.readouterr().err
