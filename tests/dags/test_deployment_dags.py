"""The deployment DAG's shape follows configuration: target, image build, human approval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
out = {}
for dag_id, dag in bag.dags.items():
    out[dag_id] = {
        "tasks": sorted(t.task_id for t in dag.tasks),
        "types": {t.task_id: type(t).__name__ for t in dag.tasks},
        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "schedule": repr(getattr(dag, "timetable", None)),
    }
print("RESULT " + json.dumps(out))
"""


def _dags(env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[-1][7:])


def test_local_target_default_no_image_no_approval_and_a_rollback_dag():
    dags = _dags({"MLOPS_DEPLOY_TARGET": ""})
    dep = dags["churn_deployment"]
    assert dep["tasks"] == ["deploy_staging", "record", "resolve_candidate", "rollout", "smoke_test"]
    assert dep["types"]["rollout"] == "RolloutOperator"
    assert dep["upstream"]["rollout"] == ["smoke_test"]
    assert "churn_candidate_model" in dep["schedule"], dep["schedule"]
    assert dags["churn_rollback"]["tasks"] == ["rollback"]
    # a model with deployment disabled has neither
    assert "breast_cancer_deployment" not in dags and "breast_cancer_rollback" not in dags


def test_kubernetes_target_builds_an_image_and_approval_adds_a_human_step(tmp_path):
    cfg = yaml.safe_load((REPO / "include/mlops/config/models/churn.yaml").read_text())
    cfg["deployment"]["approval"] = True
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(cfg))
    dep = _dags({"MLOPS_DEPLOY_TARGET": "kubernetes", "MLOPS_MODELS_DIR": str(tmp_path)})["churn_deployment"]
    assert dep["upstream"]["deploy_staging"] == ["build_image", "resolve_candidate"]
    assert dep["types"]["approve"] == "ApprovalOperator"
    assert dep["upstream"]["approve"] == ["smoke_test"] and dep["upstream"]["rollout"] == ["approve"]


def _resolve(monkeypatch, params: dict, trigger: str = "") -> dict:
    """Run the deployment DAG's resolve_candidate task body with the registry faked out."""
    import mlops_airflow.hooks
    import mlops_airflow.links
    from airflow.dag_processing.dagbag import DagBag
    from mlops.deploy import service

    cand = {"model": "churn", "version": "2", "stable_version": "1", "run_id": "r", "gate": "passed",
            "forced": False, "trigger": trigger, "alert": ""}  # fmt: skip
    seen = {}

    def fake_resolve(cfg, uri, requested, from_event, force=False):
        seen["requested"] = requested
        return dict(cand)

    monkeypatch.setattr(service, "resolve_candidate", fake_resolve)
    monkeypatch.setattr(mlops_airflow.hooks.MlflowHook, "tracking_uri", lambda self: "http://mlflow")
    monkeypatch.setattr(mlops_airflow.links, "publish_link", lambda *a, **k: None)
    dag = DagBag(dag_folder=str(REPO / "dags" / "deployment.py")).dags["churn_deployment"]
    form = {k: dag.params[k] for k in dag.params}  # the form's defaults
    out = dag.get_task("resolve_candidate").python_callable(params={**form, **params}, ti=None)
    return {**out, "requested": seen["requested"]}


def test_the_form_defaults_resolve_and_allow_replay_only_reaches_the_rollout_recorded(monkeypatch):
    out = _resolve(monkeypatch, {})
    assert out["requested"] is None  # empty version field: Asset event, else @challenger
    assert out["analysis"]["allow_replay_only"] is False and out["analysis_overrides"] == {}

    out = _resolve(monkeypatch, {"version": "2", "allow_replay_only": True, "analysis": {"min_requests": 5}})
    assert out["requested"] == "2"
    assert out["analysis"]["allow_replay_only"] is True and out["analysis"]["min_requests"] == 5
    assert out["analysis_overrides"] == {"min_requests": 5, "allow_replay_only": True}  # recorded

    # an alert-driven retrain keeps its retraining.analysis_overrides when replay-only is allowed too
    out = _resolve(monkeypatch, {"allow_replay_only": True}, trigger="alert")
    assert out["analysis_overrides"]["allow_replay_only"] is True
    assert "max_score_shift" in out["analysis_overrides"]
