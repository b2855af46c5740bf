"""``mlops demo``: the training pipeline end to end through Airflow, the way a user drives it.

Three acts, each a real DAG run triggered through the REST API and followed live:

1. a new batch lands -> validated, versioned with DVC, trained, gated -> handed to the deployment DAG
   (the candidate-model Asset) -> staging, smoke test -> the first ``@champion`` on the local endpoint
   (or, when a champion exists already, a challenger judged against it and rolled out by canary);
2. another batch lands -> a challenger is trained and judged against ``@champion`` on the same
   holdout; rejected with the gate's reasons, or released and rolled out by canary while the demo
   sends client traffic to the endpoint: promoted, or rolled back automatically;
3. a corrupt batch lands -> refused by Great Expectations, moved intact to quarantine, nothing
   trained, ``@champion`` untouched.

4. the closed loop (``mlops.demo.loop``): drifted data and traffic -> the drift check finds it ->
   ``ModelDriftDetected`` fires -> the retraining sensor starts a training run with the alert ->
   gate -> canary under the drifted traffic -> the new ``@champion`` serves; a timeline of each leg
   is printed and written as JSON under ``$MLOPS_HOME/demo/``.

Then a summary: each run's stages with outcome and duration, the decisions, links to the Airflow
UI and MLflow. Exit 0 when every act ended as expected, 1 naming the act and stage that did not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.config.secrets import secrets_path
from mlops.config.settings import Settings
from mlops.demo.airflow_api import AirflowAPI

DEMO_ROWS = 5000


@dataclass
class Act:
    """One demo run of the training DAG: what it should show, and what happened."""

    title: str
    expect: str  # "trained" (success or a rejected model) | "refused" (failed at validate)
    run_id: str = ""
    state: str = ""
    wall: float = 0.0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    trained: dict[str, Any] | None = None
    ok: bool = False
    problem: str = ""
    deployment: dict[str, Any] | None = None  # run id, state, wall, tasks, record of the deployment run


def _duration(ti: dict[str, Any]) -> float | None:
    if ti.get("duration") is not None:
        return float(ti["duration"])
    start, end = ti.get("start_date"), ti.get("end_date")
    if start and end:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return None


def land_good(settings: Settings, model: str, seed: int, rows: int = DEMO_ROWS, drift: float = 0.0) -> Path:
    """Write a clean generated batch (drifted by ``drift``) to ``model``'s landing folder; its path."""
    from mlops.data.landing import landing_dir
    from mlops.demo.datagen import generate, write_frame

    tag = f"-drift{drift:g}" if drift else ""
    out = landing_dir(settings.data_root, model) / f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}-s{seed}{tag}.csv"
    write_frame(generate(model, rows=rows, seed=seed, drift=drift), out)
    return out


def land_corrupt(settings: Settings, model: str, seed: int) -> Path:
    """A batch a real pipeline meets: an upstream bug put ages of 400 in 1 % of rows and dropped a column."""
    from mlops.data.landing import landing_dir
    from mlops.demo.datagen import generate, write_frame

    df = generate(model, rows=1000, seed=seed)
    if "age" in df.columns:
        df.loc[df.index % 100 == 0, "age"] = 400
    df = df.drop(columns=[df.columns[1]])
    out = landing_dir(settings.data_root, model) / f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}-corrupt.csv"
    write_frame(df, out)
    return out


def _run(api: AirflowAPI, dag_id: str, act: Act, timeout: int) -> None:
    run = api.trigger(dag_id, conf={}, note=f"make demo: {act.title}")
    act.run_id = run["dag_run_id"]
    print(f"  run {act.run_id}\n  live: {api.ui_run_url(dag_id, act.run_id)}", flush=True)
    t0 = time.monotonic()

    def on_change(ti: dict[str, Any]) -> None:
        state = ti.get("state")
        if state in ("running", "success", "failed", "skipped", "upstream_failed", "up_for_retry"):
            print(f"  [{time.monotonic() - t0:6.1f}s] {ti['task_id']:<18} {state}", flush=True)

    final = api.wait_for_run(dag_id, act.run_id, timeout=timeout, on_change=on_change)
    act.wall = time.monotonic() - t0
    act.state = final["state"]
    act.tasks = sorted(api.task_instances(dag_id, act.run_id), key=lambda t: t.get("start_date") or "9999")
    act.verdict = api.xcom(dag_id, act.run_id, "judge")
    act.trained = api.xcom(dag_id, act.run_id, "collect_result")


def _follow_deployment(
    api: AirflowAPI, settings: Settings, model: str, act: Act, known: set[str], timeout: int
):
    """Wait for the deployment run the training run's Asset event queued; send client traffic meanwhile."""
    from mlops.demo.traffic import Traffic

    dag_id = f"{model}_deployment"
    run = api.wait_for_new_run(dag_id, known, timeout=120)
    if run is None:
        act.ok, act.problem = False, f"the candidate-model Asset did not start {dag_id} within 120s"
        return
    print(f"  deployment run {run['dag_run_id']} (queued by the candidate-model Asset)")
    print(f"  live: {api.ui_run_url(dag_id, run['dag_run_id'])}", flush=True)
    t0 = time.monotonic()

    def on_change(ti: dict[str, Any]) -> None:
        if ti.get("state") in ("running", "deferred", "success", "failed", "skipped", "upstream_failed"):
            print(f"  [{time.monotonic() - t0:6.1f}s] {ti['task_id']:<18} {ti['state']}", flush=True)

    import contextlib

    import httpx

    endpoint = f"http://{settings.host}:{settings.serving_port}"
    try:
        serving = httpx.get(f"{endpoint}/ready", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        serving = False
    if serving:
        print(f"  sending client traffic to {endpoint} during the rollout (2 clients)")
    else:
        print("  no endpoint yet: this is the first deployment, there is no traffic to protect")
    headers = settings.endpoint_headers()
    traffic = Traffic(endpoint, _demo_rows(settings, model), clients=2, headers=headers) if serving else None
    with traffic or contextlib.nullcontext() as load:
        final = api.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout, on_change=on_change)
    tasks = {t["task_id"]: t.get("state") for t in api.task_instances(dag_id, run["dag_run_id"])}
    record = api.xcom(dag_id, run["dag_run_id"], "record", key="record")
    rolled_back = tasks.get("rollout") == "failed" and tasks.get("smoke_test") == "success"
    act.deployment = {
        "run_id": run["dag_run_id"],
        "state": final["state"],
        "wall": time.monotonic() - t0,
        "tasks": tasks,
        "record": record,
        "traffic": {"ok": load.ok, "failed": len(load.failed), "by_version": load.by_version}
        if load
        else None,
    }
    if final["state"] == "success" or rolled_back:
        if load and load.failed:
            act.ok, act.problem = False, f"{len(load.failed)} client requests failed during the rollout"
        return
    failed = [t for t, st in tasks.items() if st in ("failed", "upstream_failed")]
    act.ok, act.problem = False, f"deployment stage {failed[0] if failed else 'unknown'!r} failed"


def _demo_rows(settings: Settings, model: str) -> list[dict[str, Any]]:
    from mlops.config.model import get_model_config
    from mlops.demo.datagen import generate

    cfg = get_model_config(model, settings.models_dir)
    return json.loads(generate(model, rows=300, seed=11)[cfg.features.all].to_json(orient="records"))


def _judge(act: Act) -> None:
    states = {t["task_id"]: t.get("state") for t in act.tasks}
    failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
    if act.expect == "refused":
        act.ok = states.get("validate") == "failed" and not any(
            states.get(t) == "success" for t in states if t.startswith("train_")
        )
        act.problem = "" if act.ok else f"expected the batch to be refused at 'validate'; states: {states}"
    elif act.state == "success" or failed == ["reject_model"]:
        act.ok = True  # promoted, or judged and rejected: both are outcomes of a working pipeline
    else:
        act.problem = f"stage {failed[0] if failed else 'unknown'!r} failed"


def _serve_champion(settings: Settings, model: str) -> str | None:
    """(Re)start the local endpoint on the current @champion and show one prediction through it."""
    import httpx

    from mlops.config.model import get_model_config
    from mlops.demo.datagen import GENERATORS, generate
    from mlops.stack import local as stack

    if model != settings.serving_model:
        print(
            f"  (the local endpoint serves {settings.serving_model!r}; set MLOPS_SERVING_MODEL={model} to serve this one)"
        )
        return None
    url = stack.serve_up(settings)
    if url is None or model not in GENERATORS:
        return url
    cfg = get_model_config(model, settings.models_dir)
    rows = generate(model, rows=3, seed=7)[cfg.features.all]
    body = {"dataframe_split": rows.to_dict(orient="split", index=False)}
    r = httpx.post(
        f"{url}/invocations", json=body, headers=settings.endpoint_headers(), timeout=30, trust_env=False
    )
    r.raise_for_status()
    print(f"  POST {url}/invocations (3 rows) -> {r.json()}")
    print(f"  also: {url}/predict, {url}/metrics, {url}/version")
    return url


def run_demo(
    settings: Settings,
    model: str = "churn",
    timeout: int = 900,
    loop_cycles: int = 1,
    loop_cooldown_minutes: float | None = None,
    loop_only: bool = False,
) -> int:
    """Run the demo acts (then the closed loop, where enabled) through Airflow; 0 if all went as expected."""
    # Long by design: the demo's script, act after act; splitting it would scatter the story it prints.
    from mlops.data.landing import landing_dir

    dag_id = f"{model}_training"
    api = AirflowAPI(settings.airflow_url, settings.admin_user, settings.admin_password.get_secret_value())
    api.wait_for_dag(dag_id, timeout=180)
    api.set_paused(dag_id, False)
    from mlops.config.model import get_model_config

    deploys = get_model_config(model, settings.models_dir).deployment.enabled
    if deploys:
        api.wait_for_dag(f"{model}_deployment", timeout=180)
        api.set_paused(f"{model}_deployment", False)
    seed = int(time.time()) % 1_000_000  # new bytes on every demo: landing the same bytes again is a no-op
    acts = [
        Act("a new batch -> validated, versioned, trained, gated", "trained"),
        Act("another batch -> a challenger judged against @champion", "trained"),
        Act("a corrupt batch -> refused and quarantined", "refused"),
    ]
    if loop_only:
        acts = []  # straight to the closed loop (a served @champion is needed)
    for i, act in enumerate(acts, 1):
        print(f"\n== Act {i}: {act.title}")
        if act.expect == "refused":
            path = land_corrupt(settings, model, seed + i)
        else:
            path = land_good(settings, model, seed + i)
        print(f"  landed {path.relative_to(settings.data_root)} in {landing_dir(settings.data_root, model)}")
        known = {r["dag_run_id"] for r in api.runs(f"{model}_deployment")} if deploys else set()
        _run(api, dag_id, act, timeout)
        _judge(act)
        released = any(t["task_id"] == "release" and t.get("state") == "success" for t in act.tasks)
        if act.ok and released:
            _follow_deployment(api, settings, model, act, known, timeout)
    loop = None
    cfg = get_model_config(model, settings.models_dir)
    if deploys and cfg.retraining.enabled and model == settings.serving_model and all(a.ok for a in acts):
        from mlops.demo.loop import DEMO_COOLDOWN_MINUTES, run_loops

        print(
            "\n== Act 4: the closed loop: drift -> detected -> alert -> retrain -> canary -> new champion"
            + (f" ({loop_cycles} cycles)" if loop_cycles > 1 else "")
        )
        loop = run_loops(
            api,
            settings,
            model,
            timeout,
            land_good,
            cycles=loop_cycles,
            cooldown_minutes=DEMO_COOLDOWN_MINUTES
            if loop_cooldown_minutes is None
            else loop_cooldown_minutes,
        )

    mlflow_url = f"http://{settings.host}:{settings.mlflow_port}"
    _print_acts(api, settings, model, dag_id, acts, mlflow_url)
    if loop is not None:
        _print_loop(settings, loop)
    print("\nModel endpoint (the local target of the embedded default):")
    endpoint = _serve_champion(settings, model)
    bad = [(i, a) for i, a in enumerate(acts, 1) if not a.ok]
    if bad or (loop is not None and not loop.ok):
        for i, act in bad:
            print(
                f"\nDEMO FAILED in act {i} ({act.title}): {act.problem}. Task logs: {api.ui_run_url(dag_id, act.run_id)}"
            )
        if loop is not None and not loop.ok:
            print(f"\nDEMO FAILED in act 4 (the closed loop): {loop.problem}")
        return 1
    print(
        f"\nDemo finished: {mlflow_url} holds the model versions, {settings.airflow_url} the runs "
        f"(login {settings.admin_user}, password: grep ADMIN_PASSWORD {secrets_path(settings.home)})"
        + (f", {endpoint} serves @champion" if endpoint else "")
        + ". The stack stays up: `make down` stops it."
    )
    return 0


def _print_acts(
    api: AirflowAPI, settings: Settings, model: str, dag_id: str, acts: list[Act], mlflow_url: str
) -> None:
    """The summary of acts 1-3: each run's stages, metrics, gate decision and deployment."""
    from mlops.data.landing import quarantine_dir

    print("\n" + "=" * 78)
    print(f"Summary: {dag_id}, {len(acts) or 'no'} demo runs on the embedded default (local backend)")
    for i, act in enumerate(acts, 1):
        print(f"\nAct {i}: {act.title}")
        print(
            f"  run {act.run_id}: {act.state.upper()} in {act.wall:.1f}s  ({'as expected' if act.ok else 'UNEXPECTED'})"
        )
        for ti in act.tasks:
            d = _duration(ti)
            if ti.get("state") in (None, "removed"):
                continue
            print(f"    {ti['task_id']:<18} {ti.get('state'):<16} {f'{d:.1f}s' if d is not None else '-':>8}")
        if act.trained:
            m = act.trained.get("metrics", {})
            print(
                f"  model version {act.trained['model_version']}: "
                + "  ".join(f"{k}={m[k]:.4f}" for k in ("roc_auc", "pr_auc", "f1", "log_loss") if k in m)
            )
            print(f"  MLflow: {mlflow_url}/#/models/{model}/versions/{act.trained['model_version']}")
        if act.verdict:
            print(f"  gate {act.verdict['decision'].upper()}: {act.verdict['summary']}")
            for check in act.verdict["checks"]:
                print(f"    {'ok  ' if check['passed'] else 'FAIL'} {check['reason']}")
        if act.expect == "refused":
            q = quarantine_dir(settings.data_root, model)
            kept = sorted(p.name for p in q.glob("*-corrupt.csv")) if q.is_dir() else []
            print(f"  quarantine: {q} ({len(kept)} corrupt batch(es) kept intact, report beside each)")
        print(f"  Airflow: {api.ui_run_url(dag_id, act.run_id)}")
        dep = act.deployment
        if dep:
            rec = dep["record"] or {}
            rollout = rec.get("rollout") or {}
            print(
                f"  deployment {dep['run_id']}: {dep['state'].upper()} in {dep['wall']:.1f}s -> {rec.get('decision', '?')}"
            )
            for step in rollout.get("steps", []):
                c = step.get("canary") or {}
                print(
                    f"    step {step['phase']!s:<9} {step.get('decision', ''):<6} canary {c.get('requests') or 0:.0f} req"
                    f"  p95 {c.get('p95_ms')} ms  err {c.get('error_rate')}  shift {step.get('score_shift')}"
                )
            for reason in rollout.get("reasons", []):
                print(f"    {reason}")
            t = dep["traffic"]
            if t:
                print(
                    f"  client traffic during the rollout: {t['ok']} ok, {t['failed']} failed, "
                    f"by version {t['by_version']}"
                )
            print(f"  Airflow: {api.ui_run_url(f'{model}_deployment', dep['run_id'])}")


def _print_loop(settings: Settings, loop: Any) -> None:  # a mlops.demo.loop.LoopResult
    """The summary of act 4: each cycle's legs and outcome, and the cycles' median and max."""
    print("\nAct 4: the closed loop (drift injected -> new champion serving)")
    for i, path in enumerate(loop.timelines, 1):
        data = json.loads(path.read_text())
        if len(loop.timelines) > 1:
            print(f"  cycle {i}:")
        for leg in data["legs"]:
            print(f"  {leg['leg']:<40} {leg['seconds']:>7.1f}s")
        print(f"  {'total':<40} {data['total_seconds']:>7.1f}s  -> {data['outcome']}")
        print(f"  timeline: {path}")
    if not loop.timelines:
        print(f"  {loop.problem}")
    if loop.summary is not None:
        agg = json.loads(loop.summary.read_text())
        cs, aq = agg["cycle_seconds"], agg["alert_to_queued_seconds"]
        print(
            f"  {agg['cycles_closed']} of {agg['cycles_requested']} loop(s) closed"
            + (f"; per cycle median {cs['median']:.1f}s, max {cs['max']:.1f}s" if cs else "")
            + (f"; alert -> retraining queued median {aq['median']:.1f}s, max {aq['max']:.1f}s" if aq else "")
        )
        print(f"  cycles: {loop.summary}")
    print(f"  alert ledger: {settings.airflow_url}/mlops/alerts/")
