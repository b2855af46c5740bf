from __future__ import annotations

import json
import math

import pytest
from mlops.gate.policy import Bound, GatePolicy, GateResult, bounds_from_config, evaluate_gate

BOUNDS = bounds_from_config({"roc_auc": 0.7, "pr_auc": 0.4}, {"log_loss": 0.6})


def validate_metrics(metrics, bounds):
    """Absolute bounds only: no champion, no overfitting check (one informational check says so)."""
    return evaluate_gate(GatePolicy(bounds=tuple(bounds), max_overfit_gap=None), metrics)


@pytest.mark.parametrize(
    ("metrics", "passed", "failing"),
    [
        ({"roc_auc": 0.80, "pr_auc": 0.50, "log_loss": 0.40}, True, []),
        ({"roc_auc": 0.70, "pr_auc": 0.40, "log_loss": 0.60}, True, []),  # bounds are inclusive
        ({"roc_auc": 0.69, "pr_auc": 0.50, "log_loss": 0.40}, False, ["min:roc_auc"]),
        ({"roc_auc": 0.80, "pr_auc": 0.50, "log_loss": 0.61}, False, ["max:log_loss"]),
        (
            {"roc_auc": 0.60, "pr_auc": 0.30, "log_loss": 0.90},
            False,
            ["min:roc_auc", "min:pr_auc", "max:log_loss"],
        ),
        ({"pr_auc": 0.50, "log_loss": 0.40}, False, ["min:roc_auc"]),  # missing metric fails
        ({"roc_auc": math.nan, "pr_auc": 0.5, "log_loss": 0.4}, False, ["min:roc_auc"]),  # NaN fails
    ],
)
def test_decisions(metrics, passed, failing):
    result = validate_metrics(metrics, BOUNDS)
    assert result.passed is passed
    assert [c.name for c in result.checks if not c.passed] == failing
    assert len(result.checks) == 4  # three bounds + "no @champion yet"


def test_reasons_read_as_sentences():
    result = validate_metrics({"roc_auc": 0.65, "pr_auc": 0.5, "log_loss": 0.4}, BOUNDS)
    assert "roc_auc = 0.6500 does not hold (>= 0.7 required)." in result.reasons
    assert str(result).startswith("Gate failed (1 of 4 checks): roc_auc = 0.6500 does not hold")
    payload = json.loads(result.to_json())
    assert payload["decision"] == "failed"
    assert len(payload["checks"]) == 4


def test_no_bounds_passes_vacuously_and_says_so():
    result = validate_metrics({"roc_auc": 0.5}, [])
    assert isinstance(result, GateResult) and result.passed
    assert str(result) == "Gate passed: all 1 checks hold."
    assert result.reasons == ["There is no @champion yet, so only absolute bounds apply."]


@pytest.mark.parametrize(
    "bad", [dict(metric="x", kind="between", limit=1.0), dict(metric="x", kind="min", limit=math.nan)]
)
def test_bound_validates_itself(bad):
    with pytest.raises(ValueError):
        Bound(**bad)


# --------------------------------------------------------------------------- champion comparison

from mlops.metrics import ConfidenceInterval  # noqa: E402

POLICY = GatePolicy(
    primary_metric="roc_auc",
    bounds=tuple(BOUNDS),
    min_improvement=0.0,
    max_regression={"pr_auc": 0.02, "log_loss": 0.02},
    max_overfit_gap=0.1,
)
GOOD = {"roc_auc": 0.82, "pr_auc": 0.60, "log_loss": 0.45}
TRAIN = {"roc_auc": 0.86}


def ci(low, high=0.05):
    return ConfidenceInterval("roc_auc", low, high, 0.95, 500)


@pytest.mark.parametrize(
    ("champion", "interval", "train", "passed", "failing"),
    [
        (None, None, TRAIN, True, []),  # no champion: absolute bounds (+ overfit) only
        ({"roc_auc": 0.80, "pr_auc": 0.60, "log_loss": 0.45}, ci(0.005), TRAIN, True, []),
        ({"roc_auc": 0.80, "pr_auc": 0.60, "log_loss": 0.45}, ci(-0.004), TRAIN, False, ["confidence:roc_auc"]),
        ({"roc_auc": 0.83, "pr_auc": 0.60, "log_loss": 0.45}, ci(-0.02), TRAIN, False,
         ["improvement:roc_auc", "confidence:roc_auc"]),
        ({"roc_auc": 0.80, "pr_auc": 0.65, "log_loss": 0.45}, ci(0.005), TRAIN, False, ["regression:pr_auc"]),
        ({"roc_auc": 0.80, "pr_auc": 0.60, "log_loss": 0.40}, ci(0.005), TRAIN, False, ["regression:log_loss"]),
        (None, None, {"roc_auc": 0.99}, False, ["overfit"]),
        (None, None, None, False, ["overfit"]),  # train metrics missing: cannot rule out overfitting
    ],
)  # fmt: skip
def test_champion_comparison_table(champion, interval, train, passed, failing):
    result = evaluate_gate(
        POLICY, GOOD, train=train, champion=champion, champion_version="3" if champion else None, ci=interval
    )
    assert result.passed is passed, str(result)
    assert result.failed_checks == failing


def test_comparison_reasons_name_the_champion_and_numbers():
    result = evaluate_gate(
        POLICY, GOOD, train=TRAIN, champion={"roc_auc": 0.80, "pr_auc": 0.65, "log_loss": 0.45},
        champion_version="7", ci=ci(0.003, 0.04),
    )  # fmt: skip
    text = " ".join(result.reasons)
    assert "roc_auc improves on champion v7 by +0.0200 (0.8200 vs 0.8000" in text
    assert "bootstrap interval of the roc_auc gain is [+0.0030, +0.0400] over 500 resamples" in text
    assert "pr_auc is 0.6000 vs 0.6500 for champion v7: worse by 0.0500 (over the 0.02 allowed)." in text
    assert result.to_dict()["champion_version"] == "7"


def test_lower_is_better_metrics_as_primary():
    policy = GatePolicy(primary_metric="log_loss", bounds=(), min_improvement=0.01, max_overfit_gap=None)
    better = evaluate_gate(policy, {"log_loss": 0.40}, champion={"log_loss": 0.45})
    worse = evaluate_gate(policy, {"log_loss": 0.445}, champion={"log_loss": 0.45})
    assert better.passed and not worse.passed


@pytest.mark.parametrize("bad", [{"min_improvement": float("nan")}, {"max_regression": {"f1": -1}}])
def test_policy_validates_itself(bad):
    with pytest.raises(ValueError):
        GatePolicy(**bad)


def test_a_negative_min_improvement_is_a_non_inferiority_margin():
    """Alert-driven retrains (retraining.gate_overrides): no proven gain needed, only 'not worse by more'."""
    from dataclasses import replace

    margin = replace(POLICY, min_improvement=-0.002)
    champion = {"roc_auc": 0.8205, "pr_auc": 0.60, "log_loss": 0.45}  # GOOD is 0.0005 worse than this
    within = evaluate_gate(margin, GOOD, train=TRAIN, champion=champion, champion_version="3", ci=ci(-0.0015))
    assert within.passed, str(within)
    assert "within the non-inferiority margin" in " ".join(within.reasons)
    beyond = evaluate_gate(margin, GOOD, train=TRAIN, champion=champion, champion_version="3", ci=ci(-0.003))
    assert not beyond.passed and beyond.failed_checks == ["confidence:roc_auc"]
    assert "may be more than 0.0020 worse than champion v3" in " ".join(beyond.reasons)
    # the same interval under the ordinary gate (min_improvement 0): a gain must be proven
    strict = evaluate_gate(POLICY, GOOD, train=TRAIN, champion=champion, champion_version="3", ci=ci(-0.0015))
    assert not strict.passed and "improvement:roc_auc" in strict.failed_checks
