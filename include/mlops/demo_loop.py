"""The closed loop of ``make demo`` (act 4): drift injected -> detected -> alert -> retrain -> canary -> served.

Nobody touches anything after the drift is injected, except that the demo starts the drift check at
once instead of waiting for the hourly schedule:

1. inject: a drifted batch lands (the new data the retrain will use) and client traffic turns drifted;
2. detect: ``<model>_monitoring`` compares the champion's traffic since the injection with its
   reference profile and publishes the drift metrics (Pushgateway, or the local alert source);
3. alert: ``ModelDriftDetected`` fires after its ``for`` duration (Prometheus + Alertmanager, or the
   local rule evaluator); the always-waiting ``<model>_retraining`` sensor sees it;
4. retrain: the sensor's storm protection admits it and starts ``<model>_training`` with the alert in
   its conf; the gate judges the new model against ``@champion``;
5. deploy: the candidate-model Asset starts ``<model>_deployment``: staging, smoke test, canary under
   the (drifted) client traffic -> promoted, and the endpoint serves the new ``@champion``.

The timeline (each leg's start, end and duration) is printed and written as JSON under
``$MLOPS_HOME/demo/``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.airflow_api import AirflowAPI
from mlops.settings import Settings

# Strong enough that the retrained model measurably beats the champion on the new data, and not so
# strong that the batch breaks the model's validation rules (at 3.0 the churn rate leaves its bounds).
DRIFT = 2.0
DRIFT_ROWS = 20_000
MIN_LOGGED = 600  # requests of drifted traffic before the check (the detector needs >= 200)


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.time()
        self.legs: list[dict[str, Any]] = []
        self.outcome = ""

    def leg(self, name: str, start: float, end: float, **detail: Any) -> None:
        self.legs.append({"leg": name, "start": _iso(start), "end": _iso(end),
                          "seconds": round(end - start, 1), **detail})  # fmt: skip
        print(f"  [{end - self.t0:6.1f}s] {name}: {end - start:.1f}s"
              + (f"  ({', '.join(f'{k}={v}' for k, v in detail.items())})" if detail else ""), flush=True)  # fmt: skip

    def write(self, folder: Path, model: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"loop-{model}-{datetime.fromtimestamp(self.t0, UTC):%Y%m%dT%H%M%SZ}.json"
        total = time.time() - self.t0
        path.write_text(json.dumps({"model": model, "started": _iso(self.t0), "total_seconds": round(total, 1),
                                    "outcome": self.outcome, "legs": self.legs}, indent=2))  # fmt: skip
        return path


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _drifted_rows(settings: Settings, model: str) -> list[dict[str, Any]]:
    from mlops.datagen import generate
    from mlops.modelconfig import get_model_config

    cfg = get_model_config(model, settings.models_dir)
    return json.loads(
        generate(model, rows=500, seed=23, drift=DRIFT)[cfg.features.all].to_json(orient="records")
    )


def _champion(settings: Settings, model: str) -> str | None:
    from mlflow import MlflowClient

    from mlops.registry import CHAMPION, alias_version

    return alias_version(MlflowClient(settings.tracking_uri), model, CHAMPION)


def _served_version(endpoint: str) -> str | None:
    import httpx

    try:
        r = httpx.get(f"{endpoint}/version", timeout=5, trust_env=False)
        return str(r.json().get("model_version")) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def run_loop(
    api: AirflowAPI, settings: Settings, model: str, timeout: int, land
) -> tuple[bool, str, Path | None]:
    """Act 4. Returns (ok, problem, timeline path). ``land`` lands a batch (demo.land_good)."""
    from mlops.deploy.traffic import Traffic

    champion = _champion(settings, model)
    endpoint = f"http://{settings.host}:{settings.serving_port}"
    if champion is None or _served_version(endpoint) is None:
        return False, "no @champion is served, so there is nothing to monitor", None
    from mlops import alerting
    from mlops.modelconfig import get_model_config

    policy = get_model_config(model, settings.models_dir).retraining
    ledger = alerting.ledger(settings.home)
    why = ledger.blocker(model, cooldown_s=policy.cooldown_minutes * 60, daily_budget=policy.daily_budget)
    if why:  # a demo run again soon after the last one: storm protection would (rightly) refuse
        return (
            True,
            f"skipped: no alert-driven retrain may start now ({why}; retraining section of the config)",
            None,
        )
    for dag_id in (f"{model}_monitoring", f"{model}_retraining"):
        api.wait_for_dag(dag_id, timeout=180)
        api.set_paused(dag_id, False)  # retraining is continuous: its first run starts waiting now
    known_training = {r["dag_run_id"] for r in api.runs(f"{model}_training")}
    known_deploy = {r["dag_run_id"] for r in api.runs(f"{model}_deployment")}
    tl = Timeline()
    print(f"  champion v{champion} is served at {endpoint}; injecting drift (x{DRIFT:g}) now")

    path = land(settings, model, int(time.time()) % 1_000_000, rows=DRIFT_ROWS, drift=DRIFT)
    print(f"  landed {path.name} ({DRIFT_ROWS} rows of drifted data)")
    with Traffic(endpoint, _drifted_rows(settings, model), clients=2, pause=0.005) as load:
        deadline = time.monotonic() + 120
        while load.ok < MIN_LOGGED and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # the prediction log is written off the request path
        tl.leg("drifted traffic served", tl.t0, time.time(), requests=load.ok)

        start = time.time()
        run = api.trigger(
            f"{model}_monitoring", conf={"since": _iso(tl.t0 - 1)}, note="make demo: drift check"
        )
        final = api.wait_for_run(f"{model}_monitoring", run["dag_run_id"], timeout=300)
        tasks = {
            t["task_id"]: t.get("state") for t in api.task_instances(f"{model}_monitoring", run["dag_run_id"])
        }
        summary = api.xcom(f"{model}_monitoring", run["dag_run_id"], "check_drift") or {}
        detected = time.time()
        tl.leg(
            "drift check", start, detected, drifted=",".join(summary.get("drifted_features", [])) or "none"
        )
        if final["state"] != "success" or tasks.get("announce_drift") != "success":
            tl.outcome = f"no drift detected ({summary.get('message', final['state'])})"
            return False, tl.outcome, tl.write(settings.home / "demo", model)
        print(f"  report: {summary.get('report_url', summary.get('report'))}")

        retrain = _wait_new_run(api, f"{model}_training", known_training, timeout=300, prefix="retrain__")
        if retrain is None:
            latest = ledger.entries(model, 1)
            tl.outcome = "no retraining run within 300s of the drift alert" + (
                f"; latest alert {latest[0]['name']}: {latest[0]['decision'] or 'pending'} {latest[0]['reason'] or ''}"
                if latest
                else "; no alert reached the ledger"
            )
            return False, tl.outcome, tl.write(settings.home / "demo", model)
        alert = (retrain.get("conf") or {}).get("alert") or {}
        fired = _ts(alert.get("starts_at")) or detected
        queued = _ts(retrain.get("queued_at")) or time.time()
        tl.leg(
            "alert firing (rule `for` + evaluation)",
            detected,
            max(fired, detected),
            source=alert.get("source"),
        )
        tl.leg("alert -> retraining run queued", max(fired, detected), queued, run=retrain["dag_run_id"])
        print(f"  live: {api.ui_run_url(f'{model}_training', retrain['dag_run_id'])}")

        final = api.wait_for_run(f"{model}_training", retrain["dag_run_id"], timeout=timeout)
        tasks = {
            t["task_id"]: t.get("state")
            for t in api.task_instances(f"{model}_training", retrain["dag_run_id"])
        }
        verdict = api.xcom(f"{model}_training", retrain["dag_run_id"], "judge") or {}
        trained_at = time.time()
        tl.leg("retrain + gate", queued, trained_at, decision=verdict.get("decision", final["state"]))
        if tasks.get("release") != "success":
            failed = [t for t, st in tasks.items() if st in ("failed", "upstream_failed")][:1]
            tl.outcome = (
                f"retrained, not released: gate {verdict['decision']} — {verdict.get('summary', '')}"
                if verdict
                else f"the retraining run {final['state']} at {failed or tasks}"
            )
            return False, tl.outcome, tl.write(settings.home / "demo", model)

        deploy = _wait_new_run(api, f"{model}_deployment", known_deploy, timeout=120)
        if deploy is None:
            tl.outcome = "the candidate-model Asset did not start the deployment"
            return False, tl.outcome, tl.write(settings.home / "demo", model)
        final = api.wait_for_run(f"{model}_deployment", deploy["dag_run_id"], timeout=timeout)
        record = api.xcom(f"{model}_deployment", deploy["dag_run_id"], "record", key="record") or {}
        deployed = time.time()
        tl.leg(
            "staging + smoke + canary", trained_at, deployed, decision=record.get("decision", final["state"])
        )
    new = _champion(settings, model)
    served = _served_version(endpoint)
    tl.leg("new champion serving", tl.t0, time.time(), version=served, failed_requests=len(load.failed))
    ok = final["state"] == "success" and new != champion and served == new and not load.failed
    tl.outcome = (
        f"v{new} replaced v{champion} with no one touching anything"
        if ok
        else f"deployment {final['state']}: {record.get('decision', '?')}; champion v{new}, served v{served}, "
        f"{len(load.failed)} failed client requests"
    )
    return ok, "" if ok else tl.outcome, tl.write(settings.home / "demo", model)


def _wait_new_run(
    api: AirflowAPI, dag_id: str, known: set[str], timeout: float, prefix: str = ""
) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in api.runs(dag_id):
            if run["dag_run_id"] not in known and run["dag_run_id"].startswith(prefix):
                return run
        time.sleep(1.0)
    return None
