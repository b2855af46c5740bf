"""How a candidate rolls out (mlops.deploy.service.deployment_plan): steps, overrides, alert retrains."""

from __future__ import annotations

import pytest
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.deploy.service import deployment_plan

CFG = get_model_config("churn", BUILTIN_MODELS_DIR)
CAND = {"version": "4", "trigger": "", "alert": ""}


def test_the_form_overrides_apply_and_are_returned():
    plan = deployment_plan(
        CFG, CAND, strategy="canary", steps=[10, 50, 100], analysis_overrides={"window_s": 5}
    )
    assert plan["analysis"]["window_s"] == 5 and plan["analysis_overrides"] == {"window_s": 5}
    assert plan["steps"] == [10, 50, 100] and plan["version"] == "4" and plan["strategy"] == "canary"


def test_an_alert_retrain_gets_the_retraining_overrides_unless_the_form_sets_some():
    alert = {**CAND, "trigger": "alert", "alert": "ModelDriftDetected"}
    plan = deployment_plan(CFG, alert, strategy="canary", steps=[100], analysis_overrides={})
    assert plan["analysis_overrides"] == CFG.retraining.analysis_overrides
    assert plan["analysis"]["max_score_shift"] == CFG.retraining.analysis_overrides["max_score_shift"]
    mine = deployment_plan(CFG, alert, strategy="canary", steps=[100], analysis_overrides={"window_s": 7})
    assert mine["analysis_overrides"] == {"window_s": 7}


def test_replay_only_promotion_is_an_explicit_override():
    plan = deployment_plan(
        CFG, CAND, strategy="canary", steps=[100], analysis_overrides=None, allow_replay_only=True
    )
    assert plan["analysis"]["allow_replay_only"] is True and plan["analysis_overrides"] == {
        "allow_replay_only": True
    }


@pytest.mark.parametrize("steps", [[50, 10, 100], [10, 50], [0, 100], [10, 10, 100], []])
def test_steps_must_rise_to_100(steps):
    with pytest.raises(ValueError, match="steps must rise strictly and end at 100"):
        deployment_plan(CFG, CAND, strategy="canary", steps=steps, analysis_overrides=None)


def test_an_unknown_or_invalid_override_is_refused_by_name():
    with pytest.raises(ValueError, match=r"(?s)analysis overrides refused.*max_error_rate"):
        deployment_plan(CFG, CAND, strategy="canary", steps=[100], analysis_overrides={"max_error_rate": 2})
