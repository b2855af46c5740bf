"""``mlops demo``: run the platform's main job through Airflow, the way a user would, and report.

Lands a demo batch when the model's landing folder is empty, triggers ``<model>_training`` through
the REST API, follows its tasks live, then prints each stage with outcome and duration and links to
the run in the Airflow UI and in MLflow. Exit 0 on success; otherwise 1 with the failing stage named.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from mlops.airflow_api import AirflowAPI
from mlops.settings import Settings


def _duration(ti: dict[str, Any]) -> float | None:
    if ti.get("duration") is not None:
        return float(ti["duration"])
    start, end = ti.get("start_date"), ti.get("end_date")
    if start and end:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return None


def ensure_demo_batch(settings: Settings, model: str) -> list[str]:
    """Land one generated batch when the landing folder holds none. Returns the batches waiting."""
    from mlops.datagen import GENERATORS, generate, write_frame
    from mlops.pipeline import landing_dir, list_batches

    batches = list_batches(settings.data_root, model)
    if batches or model not in GENERATORS:
        return [str(b) for b in batches]
    out = landing_dir(settings.data_root, model) / "batch-0001.csv"
    write_frame(generate(model, rows=5000, seed=1), out)
    print(f"• landed a demo batch: {out} (5000 rows, `mlops generate --model {model} --rows 5000 --seed 1`)")
    return [str(out)]


def run_demo(settings: Settings, model: str = "churn", timeout: int = 900) -> int:
    dag_id = f"{model}_training"
    batches = ensure_demo_batch(settings, model)
    print(f"• {len(batches)} batch(es) waiting in {settings.data_root / 'landing' / model}")

    api = AirflowAPI(settings.airflow_url, settings.admin_user, settings.admin_password.get_secret_value())
    api.wait_for_dag(dag_id, timeout=180)
    api.set_paused(dag_id, False)
    run = api.trigger(dag_id, conf={}, note="triggered by `make demo`")
    run_id = run["dag_run_id"]
    print(f"• triggered {dag_id}, run {run_id}")
    print(f"  follow it live: {api.ui_run_url(dag_id, run_id)}")
    t0 = time.monotonic()

    def on_change(ti: dict[str, Any]) -> None:
        print(
            f"  [{time.monotonic() - t0:6.1f}s] {ti['task_id']:<20} {ti.get('state') or 'none'}", flush=True
        )

    run = api.wait_for_run(dag_id, run_id, timeout=timeout, on_change=on_change)
    tis = sorted(api.task_instances(dag_id, run_id), key=lambda t: t.get("start_date") or "9999")
    wall = time.monotonic() - t0

    print()
    print(f"Summary of {dag_id} run {run_id}: {run['state'].upper()} in {wall:.1f}s")
    print(f"  {'stage':<20} {'outcome':<16} {'duration':>9}")
    for ti in tis:
        d = _duration(ti)
        print(
            f"  {ti['task_id']:<20} {ti.get('state') or 'none':<16} {f'{d:.1f}s' if d is not None else '-':>9}"
        )

    trained = api.xcom(dag_id, run_id, "train")
    if isinstance(trained, str):
        trained = json.loads(trained)
    mlflow_url = f"http://{settings.host}:{settings.mlflow_port}"
    print()
    print(f"  Airflow run   {api.ui_run_url(dag_id, run_id)}")
    if isinstance(trained, dict) and trained.get("run_id"):
        print(
            f"  MLflow run    {mlflow_url}/#/experiments/{trained['experiment_id']}/runs/{trained['run_id']}"
        )
        print(f"  Model version {mlflow_url}/#/models/{model}/versions/{trained['model_version']}")
        metrics = trained.get("metrics", {})
        shown = {k: metrics[k] for k in ("roc_auc", "pr_auc", "f1", "log_loss", "brier") if k in metrics}
        print("  Holdout       " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    gate = api.xcom(dag_id, run_id, "gate")
    if isinstance(gate, dict):
        print(f"  Gate          {gate.get('decision')}: {' '.join(gate.get('reasons', []))}")
        if gate.get("promoted"):
            print(
                f"  @champion     version {gate.get('version')}"
                + (
                    f" (former champion {gate['former_champion']} is now @previous)"
                    if gate.get("former_champion")
                    else ""
                )
            )

    if run["state"] != "success":
        failed = [ti["task_id"] for ti in tis if ti.get("state") in ("failed", "upstream_failed")]
        first = failed[0] if failed else "unknown"
        print(f"\nDEMO FAILED at stage {first!r}; open the task log: {api.ui_run_url(dag_id, run_id)}")
        return 1
    print("\nDemo finished. The stack stays up: look around, then `make down`.")
    return 0
