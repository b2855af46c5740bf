"""The training and deployment DAGs through dag.test(): local backends, real MLflow server, real DVC
repo, real GX, real model servers behind the real router with client traffic during the rollout.

One story per model, in order (module-scoped state): a first champion deployed, a better challenger
released and rolled out by canary under traffic, a worse one rejected with its reasons, production
rolled back in one action, a corrupt batch quarantined intact, a duplicate batch ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlops.data.io import file_sha256
from mlops.demo.datagen import generate, write_frame
from mlops.demo.traffic import Traffic
from mlops.registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version

from tests.helpers import REPO, free_port

RUNNER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dr = bag.dags[sys.argv[2]].test(run_conf=json.loads(sys.argv[3]))
states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
print("RESULT " + json.dumps({"state": str(dr.state), "tasks": states}))
"""

RUNS_QUERY = """
import json, sys
from airflow.models import DagRun
from airflow.utils.session import create_session
with create_session() as session:
    runs = session.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id).all()
    out = [{"run_id": r.run_id, "state": str(r.state), "conf": r.conf} for r in runs]
    if sys.argv[2] == "fail":  # no scheduler here: a queued run would count as in flight forever
        for r in runs:
            if str(r.state) == "queued":
                r.state = "failed"
print("RESULT " + json.dumps(out))
"""


class Env:
    def __init__(self, root: Path, mlflow_uri: str):
        self.root = root
        self.data = root / "data"
        self.mlflow_uri = mlflow_uri
        self.runs = 0
        home = root / "airflow"
        self.vars = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": int(mlflow_uri.rsplit(":", 1)[1])}
            ),
            "MLOPS_HOME": str(root / "home"),
            "MLOPS_DATA_ROOT": str(self.data),
            "MLOPS_SERVING_PORT": str(free_port()),
            "MLOPS_MLFLOW_TRACKING_URI": mlflow_uri,
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        }
        airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
        subprocess.run(
            [airflow, "db", "migrate"], env=self.vars, check=True, capture_output=True, timeout=300
        )

    def land(self, model: str, name: str, seed: int, rows: int = 3000) -> Path:
        return write_frame(generate(model, rows, seed=seed), self.data / "landing" / model / name)

    def run(self, dag_id: str, conf: dict | None = None, extra_env: dict | None = None) -> tuple[dict, str]:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, str(REPO / "dags"), dag_id, json.dumps(conf or {})],
            env={**self.vars, **(extra_env or {})}, capture_output=True, text=True, timeout=900, cwd=self.root,
        )  # fmt: skip
        self.runs += 1
        (self.root / f"run-{self.runs:02d}-{dag_id}.log").write_text(proc.stdout + proc.stderr)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, proc.stdout[-4000:] + proc.stderr[-4000:]
        return json.loads(lines[-1][7:]), proc.stdout + proc.stderr

    def dag_runs(self, dag_id: str, prefix: str = "", fail_queued: bool = False) -> list[dict]:
        """Runs of ``dag_id`` whose id starts with ``prefix`` (queued ones of any id failed when asked)."""
        proc = subprocess.run(
            [sys.executable, "-c", RUNS_QUERY, dag_id, "fail" if fail_queued else "keep"],
            env=self.vars, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        return [r for r in json.loads(line[7:]) if r["run_id"].startswith(prefix)]

    @staticmethod
    def failed_tasks_log(result: dict, log: str) -> str:
        """The log of each failed task (dag.test prints "[DAG TEST] start task task_id=...")."""
        out = []
        for task_id, state in result["tasks"].items():
            if state == "failed":
                start = log.find(f"start task task_id={task_id} ")
                out.append(log[start : start + 6000] if start >= 0 else f"(no log for {task_id})")
        return "\n".join(out) or log[-5000:]

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.mlflow_uri)

    def target(self):
        from mlops.config.settings import Settings
        from mlops.deploy.local.target import LocalTarget

        return LocalTarget(
            "churn",
            Settings(
                home=self.vars["MLOPS_HOME"],
                serving_port=int(self.vars["MLOPS_SERVING_PORT"]),
                mlflow_tracking_uri=self.mlflow_uri,
            ),
        )

    def traffic(self, clients: int = 3) -> Traffic:
        from mlops.config.model import get_model_config
        from mlops.config.settings import get_settings

        cfg = get_model_config("churn", get_settings().models_dir)
        rows = json.loads(generate("churn", 300, seed=77)[cfg.features.all].to_json(orient="records"))
        return Traffic(self.target().endpoint(), rows, clients=clients)


@pytest.fixture(scope="module")
def env(tmp_path_factory, mlflow_uri):
    e = Env(tmp_path_factory.mktemp("dagtest"), mlflow_uri)
    yield e
    e.target().stop_all()


WEAK = {"hyperparameters": {"max_iter": 3, "learning_rate": 0.02, "max_leaf_nodes": 2}}


def test_1_first_run_registers_a_champion_with_lineage(env):
    env.land("churn", "batch-0001.csv", seed=1)
    # A deliberately weak first model, promoted by force: the next run must beat it for real.
    result, log = env.run("churn_training", {**WEAK, "force_promote": True})
    assert result["state"] == "success", log[-5000:]
    tasks = result["tasks"]
    assert tasks["validate"] == tasks["version"] == tasks["train_local"] == tasks["release"] == "success"
    assert tasks["reject_model"] == "skipped"
    assert "train_docker" not in tasks, "the embedded default enables only the local backend"

    client = env.client()
    v = alias_version(client, "churn", CHALLENGER)
    assert alias_version(client, "churn", CHAMPION) is None, "the deployment DAG makes champions"
    # The candidate-model Asset schedules the deployment; dag.test runs it by hand (@challenger).
    result, log = env.run("churn_deployment")
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert set(result["tasks"].values()) == {"success"}, result["tasks"]
    assert alias_version(client, "churn", CHAMPION) == v
    assert env.target().backends()["stable"].version == v
    record = json.loads(client.get_model_version("churn", v).tags["deploy.rollout"])
    assert record["outcome"] == "promoted" and record["steps"][0]["phase"] == "direct"
    smoke = json.loads(client.get_model_version("churn", v).tags["deploy.smoke"])
    assert smoke["passed"] and {c["name"] for c in smoke["checks"]} >= {"offline_equal", "latency", "schema"}
    mv = client.get_model_version("churn", v)
    repo = env.data / "repo"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert mv.tags["mlops.dvc_rev"] == head
    assert mv.tags["airflow.dag_id"] == "churn_training"
    assert mv.tags["mlops.force_promote"] == "requested"
    # a forced promotion is recorded exactly when the gate said no
    assert mv.tags.get("gate.forced") == ("true" if mv.tags["gate"] == "failed" else None)
    run = client.get_run(mv.run_id)
    assert run.inputs.dataset_inputs[0].tags  # the dataset input carries the DVC revision
    assert {t.key: t.value for t in run.inputs.dataset_inputs[0].tags}["dvc_rev"] == head
    assert not list((env.data / "landing" / "churn").iterdir()), "accepted batches leave the landing folder"


def test_2_better_model_is_promoted(env):
    client = env.client()
    first = alias_version(client, "churn", CHAMPION)
    env.land("churn", "batch-0002.csv", seed=2)
    result, log = env.run("churn_training")
    assert result["state"] == "success", log[-5000:]
    assert result["tasks"]["release"] == "success" and result["tasks"]["reject_model"] == "skipped"
    new = alias_version(client, "churn", CHALLENGER)
    mv = client.get_model_version("churn", new)
    assert mv.tags["gate"] == "passed" and mv.tags["gate.champion_version"] == first
    assert "bootstrap interval" in mv.tags["gate.reasons"]
    # The first champion was deliberately weak: its scores are almost constant, so any real model's
    # score distribution differs by ~0.47 (KS). The form's analysis overrides allow that, recorded.
    with env.traffic() as load:
        result, log = env.run("churn_deployment", {"analysis": {"max_score_shift": 0.7}})
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert (
        alias_version(client, "churn", CHAMPION) == new and alias_version(client, "churn", PREVIOUS) == first
    )
    rollout = json.loads(client.get_model_version("churn", new).tags["deploy.rollout"])
    assert [s["phase"] for s in rollout["steps"]] == [10, 50, 100], rollout
    assert rollout["analysis_overrides"] == {"max_score_shift": 0.7}
    assert all(s["decision"] == "pass" for s in rollout["steps"])
    assert client.get_model_version("churn", new).tags["deploy.decision"] == "promoted"
    assert load.failed == [], load.failed[:5]
    assert load.by_version.get(first, 0) > 0 and load.by_version.get(new, 0) > 0


def test_3_worse_model_is_rejected_with_reasons_champion_untouched(env):
    client = env.client()
    champion = alias_version(client, "churn", CHAMPION)
    env.land("churn", "batch-0003.csv", seed=3)
    result, log = env.run("churn_training", WEAK)
    assert result["state"] == "failed"
    assert result["tasks"]["reject_model"] == "failed" and result["tasks"]["release"] == "skipped"
    assert result["tasks"]["judge"] == "success", "a rejection is a decision, not a crash of the gate"
    assert "MODEL REJECTED" in log
    assert alias_version(client, "churn", CHAMPION) == champion
    assert alias_version(client, "churn", CHALLENGER) is None
    versions = client.search_model_versions("name='churn'")
    rejected = max(versions, key=lambda m: int(m.version))
    assert rejected.tags["gate"] == "failed" and "does not improve" in rejected.tags["gate.reasons"]


def test_3b_rollback_returns_production_to_previous_in_one_action(env):
    client = env.client()
    champion, previous = alias_version(client, "churn", CHAMPION), alias_version(client, "churn", PREVIOUS)
    with env.traffic(clients=2) as load:
        result, log = env.run("churn_rollback")
    assert result["state"] == "success", log[-5000:]
    assert alias_version(client, "churn", CHAMPION) == previous
    assert alias_version(client, "churn", PREVIOUS) is None
    assert env.target().backends()["stable"].version == previous
    assert (
        client.get_model_version("churn", champion).tags["deploy.decision"] == "rolled_back_from_production"
    )
    assert load.failed == [], load.failed[:5]


def _send(env: Env, frame, clients: int = 2) -> None:
    """Score every row of ``frame`` once through the endpoint (the server logs each request)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    rows = json.loads(frame.to_json(orient="records"))
    url = env.target().endpoint() + "/invocations"

    def post(chunk):
        with httpx.Client(timeout=30, trust_env=False) as http:
            for row in chunk:
                assert http.post(url, json={"dataframe_records": [row]}).status_code == 200

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, [rows[i::clients] for i in range(clients)]))


def test_3c_monitoring_flags_drifted_traffic_and_not_normal_traffic(env):
    import time
    from datetime import UTC, datetime

    from mlops.config.model import get_model_config
    from mlops.config.settings import get_settings

    cfg = get_model_config("churn", get_settings().models_dir)
    client = env.client()
    champion = alias_version(client, "churn", CHAMPION)
    _send(env, generate("churn", 600, seed=501)[cfg.features.all])
    time.sleep(2)  # the prediction log is written off the request path
    result, log = env.run("churn_monitoring")
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert result["tasks"] == {
        "window": "success", "check_drift": "success", "publish_metrics": "success", "is_drift": "success",
        "announce_drift": "skipped",
    }  # fmt: skip
    assert f"v{champion}" in log and "no drift" in log.lower()

    t0 = time.time()
    _send(env, generate("churn", 600, seed=502, drift=1.0)[cfg.features.all])
    time.sleep(2)
    since = datetime.fromtimestamp(t0 - 1, UTC).isoformat()
    result, log = env.run("churn_monitoring", {"since": since})
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert result["tasks"]["announce_drift"] == "success"
    reports = sorted((env.root / "home" / "reports" / "drift" / "churn").glob(f"v{champion}-*.json"))
    assert len(reports) == 2
    latest = json.loads(reports[-1].read_text())
    assert latest["status"] == "drift" and latest["n_current"] == 600
    drifted = set(latest["drifted_features"])
    # the generator's documented shifts, plus what they move (tenure and total charges follow the contract mix)
    shifted = {"monthly_charges", "support_calls_90d", "data_usage_gb", "contract_type"}
    assert {"monthly_charges", "contract_type"} <= drifted <= shifted | {"tenure_months", "total_charges"}
    run = client.search_runs(
        [client.get_experiment_by_name("churn-monitoring").experiment_id],
        order_by=["attributes.start_time DESC"],
    )[0]
    assert run.data.tags["model_version"] == champion and run.data.tags["drift.status"] == "drift"
    assert run.data.tags["mlops.dvc_rev"] == client.get_model_version("churn", champion).tags["mlops.dvc_rev"]


def _retraining_env(env, **retraining) -> dict:
    """A copy of the model configs with the churn retraining policy changed (cooldown, budget)."""
    import shutil

    import yaml
    from mlops.config.settings import get_settings

    folder = env.root / f"models-{len(list(env.root.glob('models-*')))}"
    shutil.copytree(get_settings().models_dir, folder)
    doc = yaml.safe_load((folder / "churn.yaml").read_text())
    doc["retraining"] = {**doc.get("retraining", {}), **retraining}
    (folder / "churn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"MLOPS_MODELS_DIR": str(folder)}


def _storm(champion: str, wave: str, n: int = 50):
    from mlops.alerting.alerts import Alert

    labels = {"alertname": "ModelDriftDetected", "model": "churn", "model_version": champion}
    return [
        Alert(
            "ModelDriftDetected",
            {**labels, "replica": str(i)},
            {"summary": f"wave {wave}"},
            f"{wave}{i:04d}",
            "2026-11-26T10:00:00Z",
            "webhook",
        )  # fmt: skip
        for i in range(n)
    ]


def test_3d_alert_storm_starts_exactly_one_retrain_and_a_second_wave_none(env):
    from mlops.alerting.ledger import open_ledger

    champion = alias_version(env.client(), "churn", CHAMPION)
    ledger = open_ledger(Path(env.vars["MLOPS_HOME"]))
    assert ledger.record(_storm(champion, "a")) == 50  # what 50 webhook deliveries record
    result, log = env.run("churn_retraining")
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert result["tasks"]["trigger_training"] == "success"
    (run,) = env.dag_runs("churn_training", "retrain__", fail_queued=True)
    alert = run["conf"]["alert"]
    assert run["run_id"].startswith("retrain__ModelDriftDetected__") and alert["model_version"] == champion
    assert alert["source"] == "webhook" and alert["name"] == "ModelDriftDetected"
    # a second wave inside the cooldown (60 min in churn.yaml): no retrain, all 50 recorded as suppressed
    assert ledger.record(_storm(champion, "b")) == 50
    result, log = env.run("churn_retraining")
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert result["tasks"]["trigger_training"] == "skipped"
    assert len(env.dag_runs("churn_training", "retrain__")) == 1
    rows = ledger.entries("churn")
    assert len(rows) == 100 and sum(r["decision"] == "retrain" for r in rows) == 1
    reasons = [r["reason"] for r in rows if r["decision"] == "suppressed"]
    assert (
        sum(r.startswith("coalesced") for r in reasons) == 49
        and sum(r.startswith("cooldown") for r in reasons) == 50
    )


def test_3e_drift_alert_from_the_local_source_retrains_with_the_alert_in_conf(env):
    """The drift metrics 3c published (no Prometheus here: the local store) fire ModelDriftDetected
    after its `for` duration; the sensor defers, sees it, and starts a training run carrying it."""
    import time

    champion = alias_version(env.client(), "churn", CHAMPION)
    t0 = time.monotonic()
    result, log = env.run(
        "churn_retraining", extra_env=_retraining_env(env, cooldown_minutes=0, daily_budget=10)
    )
    elapsed = time.monotonic() - t0
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert result["tasks"]["trigger_training"] == "success"
    assert "waiting for alerts on churn from the local source" in log
    *_, run = runs = env.dag_runs("churn_training", "retrain__", fail_queued=True)
    assert len(runs) == 2, runs  # 3d's and this one
    alert = run["conf"]["alert"]
    assert alert["source"] == "local" and alert["model_version"] == champion
    assert "monthly_charges" in alert["drifted_features"] and alert["report"].endswith(".html")
    assert elapsed < 120, f"retraining DAG took {elapsed:.0f}s"


def test_3f_drift_metric_through_prometheus_and_alertmanager_starts_a_retrain(env, monitoring_stack):
    """Real Pushgateway -> Prometheus rule -> Alertmanager -> the sensor -> a training run with the alert."""
    from mlops.monitoring.metrics import drift_samples, push_samples

    champion = alias_version(env.client(), "churn", CHAMPION)
    summary = {"model": "churn", "model_version": champion, "dvc_rev": "feedbeef", "status": "drift",
               "drifted_features": ["contract_type", "monthly_charges"], "drifted_share": 0.4, "rows": 900,
               "report": "http://127.0.0.1:8080/mlops/reports/drift/churn/x.html", "features": []}  # fmt: skip
    push_samples(drift_samples(summary), monitoring_stack.pushgateway_url, {"model": "churn"})
    extra = {
        **_retraining_env(env, cooldown_minutes=0, daily_budget=10, poll_interval_s=2),
        "MLOPS_ALERT_SOURCE": "alertmanager",
        "MLOPS_ALERTMANAGER_URL": monitoring_stack.alertmanager_url,
    }
    result, log = env.run("churn_retraining", extra_env=extra)
    assert result["state"] == "success", env.failed_tasks_log(result, log)
    assert "from the alertmanager source" in log and result["tasks"]["trigger_training"] == "success"
    *_, run = runs = env.dag_runs("churn_training", "retrain__", fail_queued=True)
    assert len(runs) == 3, runs
    alert = run["conf"]["alert"]
    assert alert["source"] == "alertmanager" and alert["model_version"] == champion
    assert (
        alert["drifted_features"] == ["contract_type", "monthly_charges"] and alert["dvc_rev"] == "feedbeef"
    )
    assert alert["report"] == summary["report"] and "churn" in alert["summary"]
    # withdrawn so later tests see no firing drift alert
    push_samples(drift_samples({**summary, "status": "no_drift"}),
                 monitoring_stack.pushgateway_url, {"model": "churn"})  # fmt: skip


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        ("missing-column.csv", lambda df: df.drop(columns=["tenure_months"])),
        ("out-of-range.csv", lambda df: df.assign(age=df.age.where(df.index % 10 != 0, 400))),
        ("truncated.csv", None),
    ],
)
def test_4_bad_batch_is_quarantined_intact_and_nothing_downstream_runs(env, name, corrupt):
    client = env.client()
    champion = alias_version(client, "churn", CHAMPION)
    n_versions = len(client.search_model_versions("name='churn'"))
    path = env.data / "landing" / "churn" / name
    if corrupt is None:
        good = env.land("churn", name, seed=40)
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # cut mid-row
    else:
        write_frame(corrupt(generate("churn", 1000, seed=41)), path)
    sha = file_sha256(path)
    result, log = env.run("churn_training")
    assert result["state"] == "failed"
    assert result["tasks"]["validate"] == "failed"
    assert result["tasks"]["version"] == "upstream_failed"
    assert result["tasks"]["train_local"] in ("upstream_failed", "skipped")
    quarantined = env.data / "quarantine" / "churn" / name
    assert file_sha256(quarantined) == sha, "the batch is kept byte-for-byte"
    report = json.loads(quarantined.with_name(name + ".validation.json").read_text())
    assert report["success"] is False and report["summary"]
    assert "refused and moved to quarantine" in log
    assert alias_version(client, "churn", CHAMPION) == champion
    assert len(client.search_model_versions("name='churn'")) == n_versions


def test_5_same_batch_twice_is_a_no_op(env):
    client = env.client()
    n_versions = len(client.search_model_versions("name='churn'"))
    env.land("churn", "batch-0002-again.csv", seed=2)  # the bytes of batch 2
    result, log = env.run("churn_training")
    assert result["state"] == "success", log[-4000:]
    assert result["tasks"]["version"] == "skipped"
    assert result["tasks"]["train_local"] == "skipped"
    assert (env.data / "duplicates" / "churn" / "batch-0002-again.csv").exists()
    assert len(client.search_model_versions("name='churn'")) == n_versions


def test_second_model_config_runs_through_the_same_pipeline(env):
    env.land("breast_cancer", "batch-0001.csv", seed=1, rows=400)
    result, log = env.run("breast_cancer_training")
    assert result["state"] == "success", log[-5000:]
    client = env.client()
    v = alias_version(client, "breast_cancer", CHAMPION)
    assert v is not None
    assert client.get_model_version("breast_cancer", v).tags["gate"] == "passed"
