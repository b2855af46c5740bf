"""`make up` / `make demo` / `make down` for real: the whole local stack on spare ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mlops import observability
from mlops.registry import CHAMPION, alias_version

from tests.helpers import free_port

MLOPS = str(Path(sys.executable).parent / "mlops")


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "MLOPS_HOME": str(root / "home"),
        "MLOPS_DATA_ROOT": str(root / "data"),
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        "MLOPS_SERVING_PORT": str(free_port()),
        # Prometheus, Alertmanager and the Pushgateway start with the stack when installed (CI installs them)
        "MLOPS_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "MLOPS_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
        "MLOPS_PUSHGATEWAY_URL": f"http://127.0.0.1:{free_port()}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    up = subprocess.run([MLOPS, "stack", "up"], env=env, capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        subprocess.run([MLOPS, "stack", "down"], env=env, capture_output=True, timeout=120)


def test_health_and_login(stack_env):
    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    health = httpx.get(f"{base}/api/v2/monitor/health", trust_env=False).json()
    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[part]["status"] == "healthy", health
    ok = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": "admin"}, trust_env=False)
    assert ok.status_code == 201 and ok.json()["access_token"]
    bad = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": "wrong"}, trust_env=False)
    assert bad.status_code == 401
    # the process scan used by test_down_frees_every_port sees this stack while it runs
    assert len(_processes_with_env(f"MLOPS_HOME={stack_env['MLOPS_HOME']}".encode())) >= 5


def test_up_twice_is_harmless(stack_env):
    again = subprocess.run([MLOPS, "stack", "up"], env=stack_env, capture_output=True, text=True, timeout=200)
    assert again.returncode == 0, again.stderr[-2000:]
    parts = 8 if observability.installed() else 5
    assert again.stdout.count("already running") == parts
    status = subprocess.run(
        [MLOPS, "stack", "status"], env=stack_env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and status.stdout.count("healthy") == parts, status.stdout


def test_demo_runs_the_main_job_through_airflow(stack_env):
    from mlflow import MlflowClient

    demo = subprocess.run(
        [MLOPS, "demo", "--timeout", "600"], env=stack_env, capture_output=True, text=True, timeout=1500
    )
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert out.count("(as expected)") == 3
    for stage in ("validate", "version", "train_local", "judge"):
        assert stage in out
    client = MlflowClient(f"http://127.0.0.1:{stack_env['MLOPS_MLFLOW_PORT']}")
    versions = client.search_model_versions("name='churn'")
    # two batches trained, the corrupt one refused, one retrain on the drift alert (act 4); the daily
    # schedule fired no extra run on unpause
    assert len(versions) == 3
    champion = alias_version(client, "churn", CHAMPION)
    assert champion is not None
    mv = client.get_model_version("churn", champion)
    assert mv.tags["airflow.dag_id"] == "churn_training"
    # the candidate-model Asset started churn_deployment, which put the first version in production
    assert mv.tags["deploy.decision"] == "promoted"
    assert "deployment run " in out and "(queued by the candidate-model Asset)" in out
    assert "no endpoint yet: this is the first deployment" in out
    second = client.get_model_version("churn", "2")
    assert second.tags["gate.champion_version"] == "1", "the second version is judged against the first"
    # act 4, the closed loop: drift detected -> alert -> retrain (alert in its conf) -> canary -> promoted
    assert champion == "3", out[-3000:]
    assert mv.tags["mlops.trigger"] == "alert" and mv.tags["mlops.alert.name"] == "ModelDriftDetected"
    assert "monthly_charges" in mv.tags["mlops.alert.drifted_features"]
    assert mv.tags["airflow.run_id"].startswith("retrain__ModelDriftDetected__")
    (timeline,) = (Path(stack_env["MLOPS_HOME"]) / "demo").glob("loop-churn-*.json")
    loop = json.loads(timeline.read_text())
    legs = {leg["leg"]: leg["seconds"] for leg in loop["legs"]}
    assert loop["outcome"].startswith("v3 replaced v") and "alert -> retraining run queued" in legs
    assert legs["alert -> retraining run queued"] <= 30, legs
    assert "Act 4: the closed loop" in out and "timeline: " in out
    # the alert ledger, as the UI's Browse -> Alert ledger shows it: the retrain and its run
    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    ledger = httpx.get(f"{base}/mlops/alerts/ledger.json", params={"model": "churn"}, trust_env=False).json()
    retrains = [e for e in ledger if e["decision"] == "retrain"]
    assert len(retrains) == 1 and retrains[0]["run_id"] == mv.tags["airflow.run_id"], ledger
    assert httpx.get(f"{base}/mlops/alerts/", trust_env=False).status_code == 200
    quarantine = Path(stack_env["MLOPS_DATA_ROOT"]) / "quarantine" / "churn"
    assert len(list(quarantine.glob("*-corrupt.csv"))) == 1
    assert len(list(quarantine.glob("*.validation.json"))) == 1
    # the local endpoint now serves the champion
    api = f"http://127.0.0.1:{stack_env['MLOPS_SERVING_PORT']}"
    assert httpx.get(f"{api}/ready", trust_env=False).status_code == 200
    version = httpx.get(f"{api}/version", trust_env=False)
    assert version.json()["model_version"] == champion
    assert version.headers["x-mlops-variant"] == "stable"  # through the router of the local target
    assert "POST " in out and "/invocations (3 rows) -> {'predictions': [" in out


def test_task_links_open_mlflow_and_data_docs(stack_env):
    from mlops.airflow_api import AirflowAPI

    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    api = AirflowAPI(base, "admin", "admin")
    runs = api._json("GET", "/api/v2/dags/churn_training/dagRuns")["dag_runs"]
    good = next(r["dag_run_id"] for r in runs if r["state"] == "success")

    def links(task):
        path = f"/api/v2/dags/churn_training/dagRuns/{good}/taskInstances/{task}/links"
        return api._json("GET", path)["extra_links"]

    docs = links("validate")["Data Docs"]
    assert docs.startswith(f"{base}/mlops/reports/data_docs/churn/")
    page = httpx.get(docs, trust_env=False)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    mlflow = links("collect_result")
    assert (
        "/#/experiments/" in mlflow["MLflow run"]
        and "/#/models/churn/versions/" in mlflow["MLflow model version"]
    )


def test_down_frees_every_port(stack_env):
    from mlops.stack import port_in_use

    down = subprocess.run(
        [MLOPS, "stack", "down"], env=stack_env, capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 0, down.stderr
    for key in ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT"):
        assert not port_in_use("127.0.0.1", int(stack_env[key]))
    for key in ("MLOPS_PROMETHEUS_URL", "MLOPS_ALERTMANAGER_URL", "MLOPS_PUSHGATEWAY_URL"):
        assert not port_in_use("127.0.0.1", int(stack_env[key].rsplit(":", 1)[1]))
    marker = f"MLOPS_HOME={stack_env['MLOPS_HOME']}".encode()
    assert _processes_with_env(marker) == []


def _processes_with_env(marker: bytes) -> list[int]:
    """PIDs whose environment carries ``marker``: every process of this stack, children included."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
