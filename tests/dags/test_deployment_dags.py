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
    cfg = yaml.safe_load((REPO / "include/mlops/model_configs/churn.yaml").read_text())
    cfg["deployment"]["approval"] = True
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(cfg))
    dep = _dags({"MLOPS_DEPLOY_TARGET": "kubernetes", "MLOPS_MODELS_DIR": str(tmp_path)})["churn_deployment"]
    assert dep["upstream"]["deploy_staging"] == ["build_image", "resolve_candidate"]
    assert dep["types"]["approve"] == "ApprovalOperator"
    assert dep["upstream"]["approve"] == ["smoke_test"] and dep["upstream"]["rollout"] == ["approve"]
