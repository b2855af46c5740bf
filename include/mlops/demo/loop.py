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

from mlops.config.settings import Settings
from mlops.demo.airflow_api import AirflowAPI
from mlops.registry import tags

# Drift of each cycle's batch and traffic: strong enough that the retrained model measurably beats the
# champion on the new data, and not so strong that the batch breaks the model's validation rules (at 3.0
# the churn rate leaves its bounds). Later cycles move the population again (see docs/RELIABILITY.md).
# The population moves away and back: each cycle's traffic differs from the reference profile of the
# champion the previous cycle made (trained on a window that mixes the earlier populations).
DRIFT_SCHEDULE = (2.0, 0.0)
DEMO_COOLDOWN_MINUTES = 1.0  # storm protection's cooldown while the demo runs its loops
ALERT_TO_QUEUED = "alert -> retraining run queued"
DRIFT_ROWS = 20_000
MIN_LOGGED = 600  # requests of drifted traffic before the check (the detector needs >= 200)


def population_drift(settings: Settings, model: str) -> float:
    """The drift level of the simulated population right now (0 until a loop first moved it)."""
    path = settings.home / "demo" / f"population-{model}.json"
    return float(json.loads(path.read_text())["drift"]) if path.exists() else 0.0


def next_drift(current: float) -> float:
    """Where a cycle moves the population: the schedule's entry after the current level (the
    population moves away and back, so every cycle differs from what the champion was trained on,
    across separate ``mlops demo --loop-only`` calls too, as in the soak)."""
    if current in DRIFT_SCHEDULE:
        return DRIFT_SCHEDULE[(DRIFT_SCHEDULE.index(current) + 1) % len(DRIFT_SCHEDULE)]
    return DRIFT_SCHEDULE[0]


def _move_population(settings: Settings, model: str, drift: float) -> None:
    from mlops.fileio import atomic_write_json

    (settings.home / "demo").mkdir(parents=True, exist_ok=True)
    atomic_write_json(settings.home / "demo" / f"population-{model}.json", {"drift": drift})


class Timeline:
    """The legs of one closed-loop cycle, printed as each ends and written as JSON at the end."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.legs: list[dict[str, Any]] = []
        self.outcome = ""

    def leg(self, name: str, start: float, end: float, **detail: Any) -> None:
        """Record and print one leg from ``start`` to ``end`` (epoch seconds), with any details."""
        self.legs.append({"leg": name, "start": _iso(start), "end": _iso(end),
                          "seconds": round(end - start, 1), **detail})  # fmt: skip
        print(f"  [{end - self.t0:6.1f}s] {name}: {end - start:.1f}s"
              + (f"  ({', '.join(f'{k}={v}' for k, v in detail.items())})" if detail else ""), flush=True)  # fmt: skip

    def write(self, folder: Path, model: str) -> Path:
        """Write the timeline to ``loop-<model>-<start>.json`` in ``folder``; return its path."""
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


def _drifted_rows(settings: Settings, model: str, drift: float, seed: int) -> list[dict[str, Any]]:
    from mlops.config.model import get_model_config
    from mlops.demo.datagen import generate

    cfg = get_model_config(model, settings.models_dir)
    return json.loads(
        generate(model, rows=500, seed=23 + seed, drift=drift)[cfg.features.all].to_json(orient="records")
    )


def _champion(settings: Settings, model: str) -> str | None:
    from mlops.registry import CHAMPION, alias_version, mlflow_client

    return alias_version(mlflow_client(settings.tracking_uri), model, CHAMPION)


def _served_version(endpoint: str) -> str | None:
    import httpx

    try:
        r = httpx.get(f"{endpoint}/version", timeout=5, trust_env=False)
        return str(r.json().get("model_version")) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


class LoopResult:
    """What ``run_loops`` hands back to the demo summary."""

    def __init__(self) -> None:
        self.ok = False
        self.problem = ""
        self.timelines: list[Path] = []
        self.summary: Path | None = None


def run_loops(
    api: AirflowAPI,
    settings: Settings,
    model: str,
    timeout: int,
    land,
    cycles: int = 1,
    cooldown_minutes: float = DEMO_COOLDOWN_MINUTES,
) -> LoopResult:
    """Act 4, ``cycles`` times in a row: each cycle must end with a new, alert-triggered champion.

    Storm protection would (rightly) refuse a second retrain within the model's cooldown, so for the
    demo the cooldown is shortened, and the daily budget raised to fit the cycles, through the Airflow
    Variable ``mlops_retraining`` (the documented override); the previous value is restored at the end.
    """
    from mlops.alerting import open_ledger
    from mlops.config.model import RETRAINING_OVERRIDES_VARIABLE, get_model_config

    result = LoopResult()
    endpoint = f"http://{settings.host}:{settings.serving_port}"
    if _champion(settings, model) is None or _served_version(endpoint) is None:
        result.problem = "no @champion is served, so there is nothing to monitor"
        return result
    policy = get_model_config(model, settings.models_dir).retraining
    ledger = open_ledger(settings.home, settings.alert_ledger_url)
    for dag_id in (f"{model}_monitoring", f"{model}_retraining"):
        api.wait_for_dag(dag_id, timeout=180)
        api.set_paused(dag_id, False)  # retraining is continuous: its first run starts waiting now
    previous = api.get_variable(RETRAINING_OVERRIDES_VARIABLE)
    overrides = json.loads(previous) if previous else {}
    budget = max(policy.daily_budget, ledger.retrains_today(model) + cycles)
    api.set_variable(
        RETRAINING_OVERRIDES_VARIABLE,
        json.dumps({**overrides, model: {"cooldown_minutes": cooldown_minutes, "daily_budget": budget}}),
        description="storm-protection overrides per model (set by mlops demo; see docs)",
    )
    print(
        f"  storm protection for the demo: cooldown {cooldown_minutes:g} min (config: "
        f"{policy.cooldown_minutes:g}), daily budget {budget} (config: {policy.daily_budget}), "
        f"through the Airflow Variable {RETRAINING_OVERRIDES_VARIABLE}; restored at the end"
    )
    cycles_done: list[dict[str, Any]] = []
    t0 = time.time()
    try:
        for i in range(cycles):
            try:
                _wait_quiet(api, ledger, model, cooldown_minutes * 60, budget)
            except TimeoutError as exc:
                result.problem = f"before cycle {i + 1} of {cycles}: {exc}"
                break
            drift = next_drift(population_drift(settings, model))
            if cycles > 1:
                print(f"\n  -- cycle {i + 1} of {cycles}: drift level {drift:g}")
            tl = Timeline()
            try:
                ok, problem, tl, detail = _cycle(api, settings, model, timeout, land, drift, seed=i, tl=tl)
            except Exception as exc:  # noqa: BLE001 - a broken cycle is reported with its legs so far
                ok, problem, detail = False, f"{type(exc).__name__}: {exc}", {}
                tl.outcome = problem
            result.timelines.append(tl.write(settings.home / "demo", model))
            cycles_done.append({"cycle": i + 1, "drift": drift, "ok": ok, "outcome": tl.outcome,
                                "total_seconds": round(time.time() - tl.t0, 1), **detail,
                                "legs": tl.legs})  # fmt: skip
            if not ok:
                result.problem = f"cycle {i + 1} of {cycles}: {problem}"
                break
        else:
            result.ok = True
    finally:
        if previous is None:
            api.delete_variable(RETRAINING_OVERRIDES_VARIABLE)
        else:
            api.set_variable(RETRAINING_OVERRIDES_VARIABLE, previous)
    result.summary = _write_summary(settings.home / "demo", model, t0, cycles, cycles_done)
    return result


def _wait_quiet(
    api: AirflowAPI, ledger, model: str, cooldown_s: float, budget: int, timeout: float = 900
) -> None:
    """Before a cycle: no training or deployment run in flight, no alert pending, cooldown over.

    After a promotion the platform checks the new champion at once (the champion-model Asset); that
    check may itself raise an alert and start a retrain (without a new batch it ends as "no new data").
    A cycle starts only once all of that has settled, so each cycle's legs are its own.
    """
    deadline = time.monotonic() + timeout
    said = ""
    while time.monotonic() < deadline:
        busy = [
            f"{dag_id} {r['dag_run_id']}"
            for dag_id in (f"{model}_training", f"{model}_deployment")
            for r in api.runs(dag_id, limit=5)
            if r["state"] in ("queued", "running")
        ]
        blocker = ledger.blocker(model, cooldown_s=cooldown_s, daily_budget=budget)
        pending = ledger.pending(model)
        why = (
            f"in flight: {', '.join(busy)}"
            if busy
            else f"{pending} alert(s) pending a decision"
            if pending
            else blocker
        )
        if not why:
            return
        if why != said and not why.startswith("cooldown"):
            print(f"  waiting before the next cycle: {why}", flush=True)
        said = why
        time.sleep(2.0)
    raise TimeoutError(f"the platform did not settle within {timeout:.0f}s: {said}")


def _write_summary(folder: Path, model: str, t0: float, cycles: int, done: list[dict[str, Any]]) -> Path:
    import statistics

    secs = [c["total_seconds"] for c in done if c["ok"]]
    queued = [leg["seconds"] for c in done for leg in c["legs"] if leg["leg"] == ALERT_TO_QUEUED]
    data = {
        "model": model,
        "started": _iso(t0),
        "cycles_requested": cycles,
        "cycles_closed": len(secs),
        "total_seconds": round(time.time() - t0, 1),
        "cycle_seconds": {"median": statistics.median(secs), "max": max(secs)} if secs else None,
        "alert_to_queued_seconds": {"median": statistics.median(queued), "max": max(queued)}
        if queued
        else None,
        "cycles": done,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"loops-{model}-{datetime.fromtimestamp(t0, UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _cycle(
    api: AirflowAPI,
    settings: Settings,
    model: str,
    timeout: int,
    land,
    drift: float,
    seed: int,
    tl: Timeline,
) -> tuple[bool, str, Timeline, dict[str, Any]]:
    """One closed loop: inject drift, then wait for the new alert-triggered champion to serve."""
    # Long by design: one closed loop, leg after leg, in the order of the timeline it records.
    from mlops.demo.traffic import Traffic

    champion = _champion(settings, model)
    endpoint = f"http://{settings.host}:{settings.serving_port}"
    detail: dict[str, Any] = {"champion_before": champion}
    known_training = {r["dag_run_id"] for r in api.runs(f"{model}_training")}
    known_deploy = {r["dag_run_id"] for r in api.runs(f"{model}_deployment")}
    print(
        f"  champion v{champion} is served at {endpoint}; the population moves to drift level {drift:g} now"
    )

    def fail(outcome: str) -> tuple[bool, str, Timeline, dict[str, Any]]:
        tl.outcome = outcome
        return False, outcome, tl, detail

    path = land(settings, model, (int(time.time()) + seed) % 1_000_000, rows=DRIFT_ROWS, drift=drift)
    _move_population(settings, model, drift)
    print(f"  landed {path.name} ({DRIFT_ROWS} rows at drift level {drift:g})")
    rows = _drifted_rows(settings, model, drift, seed)
    with Traffic(endpoint, rows, clients=2, pause=0.005, headers=settings.endpoint_headers()) as load:
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
            return fail(f"no drift detected ({summary.get('message', final['state'])})")
        print(f"  report: {summary.get('report_url', summary.get('report'))}")

        retrain = _wait_new_run(api, f"{model}_training", known_training, timeout=300, prefix="retrain__")
        if retrain is None:
            from mlops.alerting import open_ledger

            latest = open_ledger(settings.home, settings.alert_ledger_url).entries(model, 1)
            return fail(
                "no retraining run within 300s of the drift alert"
                + (
                    f"; latest alert {latest[0]['name']}: {latest[0]['decision'] or 'pending'} {latest[0]['reason'] or ''}"
                    if latest
                    else "; no alert reached the ledger"
                )
            )
        alert = (retrain.get("conf") or {}).get("alert") or {}
        detail.update(alert=alert.get("fingerprint"), retrain_run=retrain["dag_run_id"])
        fired = _ts(alert.get("starts_at")) or detected
        queued = _ts(retrain.get("queued_at")) or time.time()
        tl.leg(
            "alert firing (rule `for` + evaluation)",
            detected,
            max(fired, detected),
            source=alert.get("source"),
        )
        tl.leg(ALERT_TO_QUEUED, max(fired, detected), queued, run=retrain["dag_run_id"])
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
            return fail(
                f"retrained, not released: gate {verdict['decision']} — {verdict.get('summary', '')}"
                if verdict
                else f"the retraining run {final['state']} at {failed or tasks}"
            )

        deploy = _wait_new_run(api, f"{model}_deployment", known_deploy, timeout=120)
        if deploy is None:
            return fail("the candidate-model Asset did not start the deployment")
        final = api.wait_for_run(f"{model}_deployment", deploy["dag_run_id"], timeout=timeout)
        record = api.xcom(f"{model}_deployment", deploy["dag_run_id"], "record", key="record") or {}
        deployed = time.time()
        tl.leg(
            "staging + smoke + canary", trained_at, deployed, decision=record.get("decision", final["state"])
        )
    new = _champion(settings, model)
    served = _served_version(endpoint)
    tagged = _alert_tags(settings, model, new)
    detail.update(champion_after=new, champion_alert=tagged.get(tags.ALERT_FINGERPRINT))
    tl.leg("new champion serving", tl.t0, time.time(), version=served, failed_requests=len(load.failed))
    by_alert = tagged.get(tags.TRIGGER) == tags.TRIGGER_ALERT and tagged.get(
        tags.ALERT_FINGERPRINT
    ) == alert.get("fingerprint")
    ok = final["state"] == "success" and new != champion and served == new and not load.failed and by_alert
    tl.outcome = (
        f"v{new} replaced v{champion} with no one touching anything (alert {alert.get('fingerprint')})"
        if ok
        else f"deployment {final['state']}: {record.get('decision', '?')}; champion v{new}, served v{served}, "
        f"{len(load.failed)} failed client requests, version tagged by alert: {by_alert}"
    )
    return ok, "" if ok else tl.outcome, tl, detail


def _alert_tags(settings: Settings, model: str, version: str | None) -> dict[str, str]:
    """The ``mlops.*`` tags of a model version (who triggered it, which alert)."""
    from mlops.registry import mlflow_client

    if version is None:
        return {}
    mv = mlflow_client(settings.tracking_uri).get_model_version(model, version)
    return {k: v for k, v in mv.tags.items() if k.startswith("mlops.")}


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
