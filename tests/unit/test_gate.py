from __future__ import annotations

import json
import math

import pytest
from mlops.gate import Bound, GateResult, bounds_from_config, validate_metrics

BOUNDS = bounds_from_config({"roc_auc": 0.7, "pr_auc": 0.4}, {"log_loss": 0.6})


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
    assert len(result.checks) == 3


def test_reasons_read_as_sentences():
    result = validate_metrics({"roc_auc": 0.65, "pr_auc": 0.5, "log_loss": 0.4}, BOUNDS)
    assert "roc_auc = 0.6500 does not hold (>= 0.7 required)." in result.reasons
    assert str(result).startswith("Gate failed (1 of 3 checks): roc_auc = 0.6500 does not hold")
    payload = json.loads(result.to_json())
    assert payload["decision"] == "failed"
    assert len(payload["checks"]) == 3


def test_no_bounds_passes_vacuously_and_says_so():
    result = validate_metrics({"roc_auc": 0.5}, [])
    assert isinstance(result, GateResult) and result.passed
    assert str(result) == "Gate passed: all 0 checks hold."


@pytest.mark.parametrize(
    "bad", [dict(metric="x", kind="between", limit=1.0), dict(metric="x", kind="min", limit=math.nan)]
)
def test_bound_validates_itself(bad):
    with pytest.raises(ValueError):
        Bound(**bad)
