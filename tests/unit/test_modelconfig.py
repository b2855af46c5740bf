from __future__ import annotations

import pytest
from mlops.config.model import (
    BUILTIN_MODELS_DIR,
    ModelConfigError,
    discover_model_configs,
    get_model_config,
    load_model_config,
)

VALID = """
name: {name}
target: y
id_column: id
features:
  numeric: [a, b]
  categorical: [c]
segments: [c]
"""


def write(tmp_path, text, name="m"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_builtin_churn_config_is_valid():
    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    assert cfg.target == "churned"
    assert 15 <= len(cfg.features.all) <= 25
    assert cfg.gate.primary_metric == "roc_auc"


def test_valid_minimal(tmp_path):
    cfg = load_model_config(write(tmp_path, VALID.format(name="m")))
    assert cfg.features.all == ["a", "b", "c"]
    assert cfg.training.estimator == "hist_gradient_boosting"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (VALID.format(name="m").replace("target: y", "target: a"), "target 'a' must not also be a feature"),
        (VALID.format(name="m").replace("segments: [c]", "segments: [a]"), "segments must be categorical"),
        (VALID.format(name="m").replace("numeric: [a, b]", "numeric: [a, a]"), "features listed twice"),
        (VALID.format(name="m") + "unknown_key: 1\n", "unknown_key"),
        (VALID.format(name="m").replace("id_column: id\n", ""), "id_column"),
        (VALID.format(name="m") + "training:\n  holdout_fraction: 2\n", "training.holdout_fraction"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: [unclosed\n", "cannot read model config"),
    ],
)
def test_invalid_configs_name_the_problem(tmp_path, text, needle):
    with pytest.raises(ModelConfigError, match=None) as exc:
        load_model_config(write(tmp_path, text))
    assert needle in str(exc.value)
    assert "m.yaml" in str(exc.value)


def test_name_must_match_file(tmp_path):
    with pytest.raises(ModelConfigError, match="must match the file name"):
        load_model_config(write(tmp_path, VALID.format(name="other"), name="m"))


def test_unknown_model_lists_known(tmp_path):
    write(tmp_path, VALID.format(name="m"))
    assert list(discover_model_configs(tmp_path)) == ["m"]
    with pytest.raises(ModelConfigError, match="known: m"):
        get_model_config("x", tmp_path)


def test_gate_metric_typo_is_refused(tmp_path):
    text = VALID.format(name="m") + "gate:\n  primary_metric: roc_acu\n  min: {f1: 0.5}\n"
    with pytest.raises(ModelConfigError, match=r"gate names unknown metrics \['roc_acu'\]"):
        load_model_config(write(tmp_path, text))


def test_retraining_overrides_change_only_storm_protection_and_are_validated():
    r = get_model_config("churn", BUILTIN_MODELS_DIR).retraining
    assert r.with_overrides(None) is r and r.with_overrides({}) is r
    short = r.with_overrides({"cooldown_minutes": 1, "daily_budget": 10})
    assert (short.cooldown_minutes, short.daily_budget) == (1.0, 10)
    assert short.alerts == r.alerts and short.analysis_overrides == r.analysis_overrides
    with pytest.raises(ValueError, match=r"cannot be overridden: \['alerts'\]"):
        r.with_overrides({"alerts": []})
    with pytest.raises(ValueError, match="cooldown_minutes"):
        r.with_overrides({"cooldown_minutes": -5})
    with pytest.raises(ValueError, match="JSON object"):
        r.with_overrides(["cooldown_minutes"])


def test_gate_overrides_of_alert_driven_retrains(tmp_path):
    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    assert cfg.retraining.gate_overrides == {"min_improvement": -0.005}
    gate = cfg.gate.with_overrides(cfg.retraining.gate_overrides)
    assert gate.min_improvement == -0.005 and gate.primary_metric == cfg.gate.primary_metric
    assert cfg.gate.min_improvement == 0.0  # ordinary releases keep the proven-gain rule
    bad = VALID.format(name="m") + "retraining:\n  gate_overrides: {primary_metric: 1}\n"
    with pytest.raises(ModelConfigError, match="gate_overrides may change"):
        load_model_config(write(tmp_path, bad))
