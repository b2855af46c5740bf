"""`make up` / `make demo` / `make down` for real: the whole local stack on spare ports."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mlops.demo.acts import _demo_rows
from mlops.registry.aliases import CHAMPION, alias_version
from mlops.stack import observability

from tests.helpers import free_port

MLOPS = str(Path(sys.executable).parent / "mlops")
ENDPOINT_TOKEN = secrets.token_urlsafe(32)
CYCLES = 3  # `mlops demo --loop-cycles 3`: three closed loops in a row, each a new alert-triggered champion


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
        # the model endpoint requires a token: the demo's smoke tests, analyses, replays and client
        # traffic must all send it (given by the environment, the way a deployment would)
        "MLOPS_ENDPOINT_TOKEN": ENDPOINT_TOKEN,
    }
    up = subprocess.run([MLOPS, "stack", "up"], env=env, capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        subprocess.run([MLOPS, "stack", "down"], env=env, capture_output=True, timeout=120)


def _settings(env: dict):
    """The stack's settings as its processes see them (secrets from its generated secrets file)."""
    from mlops.config.settings import Settings

    return Settings(home=Path(env["MLOPS_HOME"]))


def _api(env: dict):
    from mlops.demo.airflow_api import AirflowAPI

    s = _settings(env)
    return AirflowAPI(
        f"http://127.0.0.1:{env['MLOPS_AIRFLOW_PORT']}", s.admin_user, s.admin_password.get_secret_value()
    )


def test_health_and_login(stack_env):
    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    health = httpx.get(f"{base}/api/v2/monitor/health", trust_env=False).json()
    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[part]["status"] == "healthy", health
    password = _settings(stack_env).admin_password.get_secret_value()
    ok = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, trust_env=False)
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


@pytest.mark.timeout(2700)  # the main job and three full loops: about 20 min on a quiet 2-core machine
def test_demo_runs_the_main_job_through_airflow(stack_env):
    from mlflow import MlflowClient

    demo = subprocess.run(
        [MLOPS, "demo", "--timeout", "600", "--loop-cycles", str(CYCLES)],
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=2600,
    )
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert out.count("(as expected)") == 3
    for stage in ("validate", "version", "train_local", "judge"):
        assert stage in out
    client = MlflowClient(f"http://127.0.0.1:{stack_env['MLOPS_MLFLOW_PORT']}")
    versions = client.search_model_versions("name='churn'")
    # two batches trained, the corrupt one refused, one retrain per loop cycle on its drift alert
    # (act 4); the daily schedule fired no extra run on unpause
    assert len(versions) == 2 + CYCLES
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
    # act 4, the closed loop, CYCLES times in a row: drift detected -> alert -> retrain (alert in its
    # conf) -> canary -> promoted; every cycle's champion is a new version tagged with its own alert
    assert champion == str(2 + CYCLES), out[-3000:]
    (summary,) = (Path(stack_env["MLOPS_HOME"]) / "demo").glob("loops-churn-*.json")
    loops = json.loads(summary.read_text())
    assert loops["cycles_closed"] == CYCLES, loops
    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    login = {"Authorization": f"Bearer {_api(stack_env).token()}"}
    ledger = httpx.get(
        f"{base}/mlops/alerts/ledger.json", params={"model": "churn"}, headers=login, trust_env=False
    ).json()
    retrain_runs = {e["run_id"] for e in ledger if e["decision"] == "retrain"}
    for i, cycle in enumerate(loops["cycles"]):
        assert cycle["champion_after"] == str(3 + i) and cycle["champion_before"] != cycle["champion_after"]
        tags = client.get_model_version("churn", cycle["champion_after"]).tags
        assert tags["mlops.trigger"] == "alert" and tags["mlops.alert.name"] == "ModelDriftDetected"
        assert tags["mlops.alert.fingerprint"] == cycle["alert"] == cycle["champion_alert"]
        assert tags["airflow.run_id"] == cycle["retrain_run"] and cycle["retrain_run"] in retrain_runs
        assert tags["deploy.decision"] == "promoted"
        legs = {leg["leg"]: leg["seconds"] for leg in cycle["legs"]}
        assert legs["alert -> retraining run queued"] <= 30, legs
    assert len({c["alert"] for c in loops["cycles"]}) == CYCLES  # a new alert each time
    # the first cycle's drift (level 0 -> 2) moves monthly_charges, the documented shift of the generator
    first = client.get_model_version("churn", loops["cycles"][0]["champion_after"]).tags
    assert "monthly_charges" in first["mlops.alert.drifted_features"], first
    assert "Act 4: the closed loop" in out and f"{CYCLES} of {CYCLES} loop(s) closed" in out
    # the demo's shortened cooldown was an override for the loop only: it is gone again

    assert _api(stack_env).get_variable("mlops_retraining") is None
    assert httpx.get(f"{base}/mlops/alerts/", headers=login, trust_env=False).status_code == 200
    assert httpx.get(f"{base}/mlops/alerts/", trust_env=False).status_code == 401  # Airflow's login
    quarantine = Path(stack_env["MLOPS_DATA_ROOT"]) / "quarantine" / "churn"
    assert len(list(quarantine.glob("*-corrupt.csv"))) == 1
    assert len(list(quarantine.glob("*.validation.json"))) == 1
    # the local endpoint now serves the champion
    api = f"http://127.0.0.1:{stack_env['MLOPS_SERVING_PORT']}"
    assert httpx.get(f"{api}/ready", trust_env=False).status_code == 200
    version = httpx.get(f"{api}/version", trust_env=False)
    assert version.json()["model_version"] == champion
    assert version.headers["x-mlops-variant"] == "stable"  # through the router of the local target
    row = {"dataframe_records": _demo_rows(_settings(stack_env), "churn")[:1]}
    bearer = {"Authorization": f"Bearer {ENDPOINT_TOKEN}"}
    assert httpx.post(f"{api}/invocations", json=row, headers=bearer, trust_env=False).status_code == 200
    assert httpx.post(f"{api}/invocations", json=row, trust_env=False).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 43}
    assert httpx.post(f"{api}/invocations", json=row, headers=wrong, trust_env=False).status_code == 401
    assert "POST " in out and "/invocations (3 rows) -> {'predictions': [" in out


def test_the_retraining_dag_keeps_waiting_run_after_run(stack_env):
    """Two alerts further apart than the (shortened) cooldown: two training runs, both started by the sensor.

    Before issue 10's fix the continuous retraining DAG never created a run after its first: the second
    alert stayed pending forever.
    """
    import time

    from mlflow import MlflowClient
    from mlops.alerting.ledger import open_ledger

    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    api = _api(stack_env)
    api.set_paused("churn_retraining", False)  # the demo unpaused it already; harmless when run alone
    api.set_variable(
        "mlops_retraining", json.dumps({"churn": {"cooldown_minutes": 0.1, "daily_budget": 100}})
    )
    token = _settings(stack_env).alert_webhook_token.get_secret_value()  # what the stack's webhook expects
    client = MlflowClient(f"http://127.0.0.1:{stack_env['MLOPS_MLFLOW_PORT']}")
    champion = alias_version(client, "churn", CHAMPION)
    ledger = open_ledger(_settings(stack_env).home)
    started = []
    try:
        for i in range(2):
            # The stack's own drift alert may still fire (the demo's last drift): an alert of ours can
            # then be coalesced into a retrain of that one, or be suppressed because it just started
            # one. Either way the sensor decided it, which is what this test is about; ours is retried
            # (a new firing) when another alert's retrain was in the way.
            run_id = None
            for attempt in range(4):
                # a training run in flight would (rightly) suppress the alert: start from a quiet platform
                assert _wait_for(lambda: None if _training_in_flight(api) else True, timeout=600)
                champion = alias_version(client, "churn", CHAMPION)  # another retrain may have replaced it
                fp = f"issue10-{i}-{attempt}-{time.time_ns()}"
                payload = {"version": "4", "alerts": [{
                    "status": "firing", "fingerprint": fp, "startsAt": _now_iso(),
                    "labels": {"alertname": "ModelDriftDetected", "model": "churn", "model_version": champion},
                    "annotations": {"summary": "test"},
                }]}  # fmt: skip
                r = httpx.post(
                    f"{base}/mlops/alerts/webhook",
                    json=payload,
                    headers={"Authorization": f"Bearer {token}"},
                    trust_env=False,
                )
                assert r.status_code == 200, r.text
                decided = _wait_for(lambda fp=fp: _decided(ledger, fp), timeout=180)
                assert decided is not None, (
                    f"alert {i + 1} was not decided within 180s: the DAG stopped waiting"
                )
                run_id = _retrain_run_of(ledger, decided)
                if run_id is not None:
                    break
                time.sleep(7)  # suppressed by another alert's fresh retrain: past the 6 s cooldown, again
            assert run_id is not None, (
                f"alert {i + 1} never started (or joined) a retrain: {decided['reason']}"
            )
            run = _wait_for(lambda run_id=run_id: _training_run(api, run_id), timeout=180)
            assert run is not None, f"the retrain {run_id} of alert {i + 1} was never created"
            assert run["dag_run_id"].startswith("retrain__") and run["triggered_by"] == "operator", run
            started.append(run["dag_run_id"])
            final = api.wait_for_run("churn_training", run["dag_run_id"], timeout=300)
            assert final["state"] in ("success", "failed")  # no new batch: it ends at version ("no new data")
            time.sleep(7)  # past the 6 s cooldown
    finally:
        api.delete_variable("mlops_retraining")
    assert len(set(started)) == 2
    retraining = [r for r in api.runs("churn_retraining", limit=100) if r["run_type"] == "scheduled"]
    assert len(retraining) >= 3, "the continuous DAG created a new waiting run after each one"
    assert len({r["logical_date"] for r in retraining}) == len(retraining)


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _training_in_flight(api) -> bool:
    return any(r["state"] in ("queued", "running") for r in api.runs("churn_training"))


def _decided(ledger, fingerprint: str):
    """The ledger entry of the alert with ``fingerprint`` once the sensor decided it, else None."""
    for entry in ledger.entries("churn", 500):
        if entry["fingerprint"] == fingerprint and entry["decision"] is not None:
            return entry
    return None


def _retrain_run_of(ledger, entry) -> str | None:
    """The training run a decided alert started or was coalesced into; None if another one was in the way."""
    if entry["decision"] == "retrain":
        return entry["run_id"]
    marker = "coalesced into the retrain started for alert "
    if entry["reason"].startswith(marker):
        other = entry["reason"][len(marker) :]
        return next(
            e["run_id"]
            for e in ledger.entries("churn", 500)
            if e["fingerprint"] == other and e["decision"] == "retrain"
        )
    assert entry["reason"].startswith(("cooldown", "a training run is in flight", "about v")), entry["reason"]
    return None


def _training_run(api, run_id: str):
    return next((r for r in api.runs("churn_training", limit=100) if r["dag_run_id"] == run_id), None)


def _wait_for(fn, timeout: float):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = fn()
        if found is not None:
            return found
        time.sleep(1.0)
    return None


def test_every_dag_can_be_triggered_with_its_defaults(stack_env):
    """What the UI's trigger form sends when nobody edits a field: the REST API accepts it for every DAG.

    Each DAG is paused first, so the run is created (and its conf validated against the Params) but never
    executed; it is deleted again.
    """

    api = _api(stack_env)
    dags = api._json("GET", "/api/v2/dags", params={"limit": 100})["dags"]
    assert {
        "churn_training",
        "churn_deployment",
        "churn_monitoring",
        "churn_retraining",
        "churn_rollback",
    } <= {d["dag_id"] for d in dags}
    for dag in dags:
        dag_id, paused = dag["dag_id"], dag["is_paused"]
        api.set_paused(dag_id, True)
        try:
            r = api._request(
                "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}}
            )
            assert r.status_code in (200, 201), f"{dag_id}: {r.status_code} {r.text[:300]}"
            run_id = r.json()["dag_run_id"]
            assert api._request("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").status_code == 204
        finally:
            api.set_paused(dag_id, paused)


def test_task_links_open_mlflow_and_data_docs(stack_env):

    base = f"http://127.0.0.1:{stack_env['MLOPS_AIRFLOW_PORT']}"
    api = _api(stack_env)
    runs = api._json("GET", "/api/v2/dags/churn_training/dagRuns")["dag_runs"]
    good = next(r["dag_run_id"] for r in runs if r["state"] == "success")

    def links(task):
        path = f"/api/v2/dags/churn_training/dagRuns/{good}/taskInstances/{task}/links"
        return api._json("GET", path)["extra_links"]

    docs = links("validate")["Data Docs"]
    assert docs.startswith(f"{base}/mlops/reports/data_docs/churn/")
    # the link opens for a logged-in user (the UI's `_token` cookie, as a browser sends it), else 401
    assert httpx.get(docs, trust_env=False).status_code == 401
    page = httpx.get(docs, cookies={"_token": api.token()}, trust_env=False)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # and in a real browser: signed in through Airflow's own login form, the task's link shows the report
    from tests.browser import chromium, require_chromium

    require_chromium()
    s = _settings(stack_env)
    with chromium() as browser:
        tab = browser.new_context().new_page()
        assert tab.goto(docs).status == 401
        # the UI's sign-in page (where the UI redirects a signed-out visitor); the form is rendered by
        # script, so wait for its fields rather than for a navigation event
        tab.goto(f"{base}/auth/login?next=%2F", wait_until="domcontentloaded")
        tab.locator("input[name=username]").fill(s.admin_user, timeout=60_000)
        tab.locator("input[name=password]").fill(s.admin_password.get_secret_value())
        tab.locator("button[type=submit]").click()
        for _ in range(60):  # signed in: the UI's `_token` cookie is set
            if any(c["name"] == "_token" for c in tab.context.cookies()):
                break
            tab.wait_for_timeout(500)
        assert tab.goto(docs).status == 200
        assert "churn_batch" in tab.locator("body").inner_text()  # the batch's validation results
    health = httpx.get(f"{base}/mlops/health", trust_env=False)
    assert health.json() == {"status": "ok"}
    assert httpx.get(f"{base}/mlops/openapi.json", trust_env=False).status_code == 404
    mlflow = links("collect_result")
    assert (
        "/#/experiments/" in mlflow["MLflow run"]
        and "/#/models/churn/versions/" in mlflow["MLflow model version"]
    )


#: Files meant to hold secrets (0600): the generated secrets, Airflow's password file, the CLI's env file,
#: Alertmanager's credentials file. Nothing else under the state folder or the data root may hold one.
SECRET_HOLDERS = {"secrets.env", "passwords.json", "airflow.env", "webhook-token", "api-token"}


def test_no_secret_anywhere_but_its_files(stack_env):
    """After the demo: no secret in any log, database (XCom, run conf, MLflow params and tags), report,
    artifact, process argv or `mlops config` output; generated, 0600, and not the old public defaults."""
    from mlops.config.secrets import GENERATED_FIELDS, KNOWN_VALUES, SECRET_FIELDS, secrets_path

    s = _settings(stack_env)
    values = {name: getattr(s, name).get_secret_value() for name in GENERATED_FIELDS}
    assert all(len(v) >= 24 and v not in KNOWN_VALUES for v in values.values()), "secrets must be generated"
    assert set(SECRET_FIELDS) - set(GENERATED_FIELDS) == {"endpoint_token"}
    values["endpoint_token"] = ENDPOINT_TOKEN  # given by the environment, not generated
    path = secrets_path(s.home)
    assert path.stat().st_mode & 0o777 == 0o600
    needles = {name: v.encode() for name, v in values.items()}
    scanned, found = 0, []
    for root in (Path(stack_env["MLOPS_HOME"]), Path(stack_env["MLOPS_DATA_ROOT"])):
        for f in root.rglob("*"):
            if not f.is_file() or f.name in SECRET_HOLDERS or f.name.endswith(".sock"):
                continue
            data = f.read_bytes()
            scanned += 1
            found += [f"{name} in {f}" for name, v in needles.items() if v in data]
    assert scanned > 50 and found == [], found
    with_home = _processes_with_env(f"MLOPS_HOME={stack_env['MLOPS_HOME']}".encode())
    assert len(with_home) >= 5
    # environments: only Airflow's own processes hold Airflow's keys; nobody holds the admin password;
    # MLflow, the monitoring servers, the router and the model servers hold no secret at all
    checked = 0
    for pid in with_home:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        airflow = any(Path(a.decode(errors="replace")).name.startswith("airflow") for a in argv[:2])
        allowed = {"jwt_secret", "fernet_key", "alert_webhook_token", "endpoint_token"} if airflow else set()
        held = {n for n, v in needles.items() if v in environ} - allowed
        assert not held, f"pid {pid} ({b' '.join(argv)[:120]!r}) has {held} in its environment"
        checked += not airflow
    assert checked >= 3  # MLflow and its workers at least, whatever else runs
    for pid in Path("/proc").iterdir():
        if pid.name.isdigit():
            try:
                argv = (pid / "cmdline").read_bytes()
            except OSError:
                continue
            assert not [n for n, v in needles.items() if v in argv], f"a secret in the argv of pid {pid.name}"
    shown = subprocess.run([MLOPS, "config"], env=stack_env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "**********" in shown.stdout
    assert not [n for n, v in values.items() if v in shown.stdout + shown.stderr]


def test_down_frees_every_port(stack_env):
    from mlops.stack.local import port_in_use

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
