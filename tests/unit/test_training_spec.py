"""What the DAG asks the training entrypoint to do (mlops.training.spec): argv, env, run tags."""

from __future__ import annotations

import pytest
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.registry import tags
from mlops.training.spec import KUBERNETES_RESULT_PATH, run_tags, training_spec

TS = {"repo": "/data/repo", "rev": "abc123", "digest": "d1", "paths": ["churn/a.csv", "churn/b.csv"]}


def test_run_tags_name_the_airflow_run_and_the_alert():
    plain = run_tags(dag_id="churn_training", run_id="r1", try_number=2, force_promote=False, alert=None)
    assert plain[tags.AIRFLOW_DAG_ID] == "churn_training" and plain[tags.AIRFLOW_TRY_NUMBER] == "2"
    assert tags.TRIGGER not in plain and tags.FORCE_PROMOTE not in plain and tags.GIT_COMMIT in plain
    alert = {"name": "ModelDriftDetected", "fingerprint": "f1", "drifted_features": ["a", "b"]}
    by_alert = run_tags(dag_id="d", run_id="r", try_number=1, force_promote=True, alert=alert)
    assert by_alert[tags.TRIGGER] == "alert" and by_alert[tags.ALERT_FINGERPRINT] == "f1"
    assert by_alert[tags.ALERT_DRIFTED_FEATURES] == "a,b" and by_alert[tags.FORCE_PROMOTE] == "requested"


def test_local_and_pod_specs():
    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    kw = dict(run_tags={"k": "v"}, hyperparameters=None, models_dir="/m", tracking_uri="http://mlflow:5000")
    local = training_spec(cfg, TS, backend="local", offered=["local", "kubernetes"], **kw)
    assert local["argv"][:5] == ["python", "-m", "mlops.training", "--model", "churn"]
    assert "/data/repo/churn/a.csv" in local["argv"] and "--models-dir" in local["argv"]
    assert local["env"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    pod = training_spec(cfg, TS, backend="kubernetes", offered=["local", "kubernetes"], **kw)
    assert "churn/a.csv" in pod["argv"] and "--models-dir" not in pod["argv"]
    assert (
        pod["argv"][-2:] == ["--output", KUBERNETES_RESULT_PATH] and "MLFLOW_TRACKING_URI" not in pod["env"]
    )
    assert not any("password" in a.lower() for a in pod["argv"])  # the spec is stored as XCom


def test_a_backend_not_offered_is_refused_with_the_offer():
    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    with pytest.raises(ValueError, match=r"'docker' is not offered for churn \(offered: \['local'\]\)"):
        training_spec(
            cfg, TS, backend="docker", offered=["local"], run_tags={}, hyperparameters=None, models_dir="/m",
            tracking_uri="u",
        )  # fmt: skip
