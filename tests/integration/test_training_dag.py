"""The whole training DAG through dag.test(), on the local backend, against a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlops.datagen import generate_churn, write_frame
from mlops.registry import CHAMPION, alias_version

from tests.helpers import REPO

RUNNER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dr = bag.dags[sys.argv[2]].test(run_conf=json.loads(sys.argv[3]))
states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
print("RESULT " + json.dumps({"state": str(dr.state), "tasks": states}))
"""


def run_dag(tmp_path, mlflow_uri, dag_id, conf=None):
    home = tmp_path / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": int(mlflow_uri.rsplit(":", 1)[1])}
        ),
        "MLOPS_DATA_ROOT": str(tmp_path / "data"),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(REPO / "dags"), dag_id, json.dumps(conf or {})],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][7:]), proc.stdout + proc.stderr


def test_churn_training_dag_registers_a_champion(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    write_frame(generate_churn(3000, seed=11), tmp_path / "data" / "landing" / "churn" / "batch-0001.csv")
    result, log = run_dag(tmp_path, mlflow_uri, "churn_training", {"hyperparameters": {"max_iter": 50}})
    assert result["state"] == "success", log[-4000:]
    assert result["tasks"] == {"collect_batches": "success", "train": "success", "gate": "success"}

    client = MlflowClient(mlflow_uri)
    champion = alias_version(client, "churn", CHAMPION)
    assert champion is not None
    mv = client.get_model_version("churn", champion)
    assert mv.tags["airflow.dag_id"] == "churn_training"
    assert mv.tags["gate"] == "passed"
    assert client.get_run(mv.run_id).data.params["hp.max_iter"] == "50"  # the trigger form's override


def test_empty_landing_fails_at_collect_without_training(tmp_path, mlflow_uri):
    result, log = run_dag(tmp_path, mlflow_uri, "churn_training")
    assert result["state"] == "failed"
    assert result["tasks"]["collect_batches"] == "failed"
    assert result["tasks"]["train"] == "upstream_failed"
    assert "no batch files" in log
