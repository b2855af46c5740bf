"""Alert-driven retraining DAGs: ``<model>_retraining`` per model config with retraining enabled.

Thin wiring only: alert sources and storm protection are in ``mlops.alerting``, the deferrable sensor
in ``mlops_airflow.alerts``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from mlops import defaults
from mlops.modelconfig import ModelConfig, discover_model_configs, load_model_config
from mlops_airflow.alerts import AlertSensor

DOC = """
### {name}: retraining on alerts

Always on (a continuous schedule: one run waits at a time, deferred in the triggerer, no worker slot):

1. **wait_for_alert**: polls the alert source every {poll:g}s (MLOPS_ALERT_SOURCE: Alertmanager,
   Prometheus, or the local rule evaluator of the embedded default) and the alert ledger, which the
   webhook receiver (`POST /mlops/alerts/webhook`) also feeds. An unreachable source is retried with
   backoff; the sensor keeps waiting.
2. **admit** (storm protection): every pending alert is decided once, atomically. At most one starts a
   retrain; the others are suppressed with their reason: same firing seen before (dedup by fingerprint),
   a training run in flight, cooldown ({cooldown:g} min after each retrain), daily budget
   ({budget} per UTC day), not the serving champion, or an alert that does not retrain
   ({alerts}). See the **Alert ledger** (Browse menu, `/mlops/alerts/`).
3. **trigger_training**: `{name}_training` with the alert in its conf (name, fingerprint, drifted
   features, report link); the MLflow run is tagged with it.

Config: `{config}` (section `retraining`).
"""


def build_retraining_dag(cfg: ModelConfig, config_path: str) -> None:
    r = cfg.retraining

    @dag(
        dag_id=f"{cfg.name}_retraining",
        schedule="@continuous",
        max_active_runs=1,
        catchup=False,
        render_template_as_native_obj=True,
        tags=[f"model:{cfg.name}", "stage:retraining"],
        doc_md=DOC.format(
            name=cfg.name,
            poll=r.poll_interval_s,
            cooldown=r.cooldown_minutes,
            budget=r.daily_budget,
            alerts=", ".join(r.alerts),
            config=config_path,
        ),  # fmt: skip
        default_args={"owner": cfg.owner, "retries": 2, "retry_delay": timedelta(seconds=30)},
    )
    def retraining_dag() -> None:
        wait = AlertSensor(task_id="wait_for_alert", model=cfg.name, poll_interval=r.poll_interval_s)

        @task
        def admit(ti=None) -> dict | None:
            """Decide every pending alert; returns the training run to start, or None."""
            from mlflow import MlflowClient
            from mlops import alerting
            from mlops.registry import CHAMPION, alias_version
            from mlops.settings import get_settings
            from mlops_airflow.hooks import MlflowHook

            training = f"{cfg.name}_training"
            ledger = alerting.ledger(get_settings().home)
            for row in ledger.unlaunched(cfg.name):  # accepted before: did its run get created?
                if ti.get_dr_count(dag_id=training, run_ids=[row["run_id"]]):
                    ledger.mark_launched(row["key"])
            running = ti.get_dr_count(dag_id=training, states=["queued", "running"])
            champion = alias_version(
                MlflowClient(MlflowHook().tracking_uri()), cfg.registered_model_name, CHAMPION
            )
            decision = ledger.decide(
                cfg.name,
                alert_names=list(r.alerts),
                champion=champion,
                in_flight=[f"{running} run(s) of {training}"] if running else [],
                cooldown_s=r.cooldown_minutes * 60.0,
                daily_budget=r.daily_budget,
            )
            for key, reason in decision.suppressed:
                print(f"suppressed {key}: {reason}")
            if decision.accepted is None:
                print(f"no retrain: {len(decision.suppressed)} alert(s) suppressed (see /mlops/alerts/)")
                return None
            accepted = dict(decision.accepted)
            run_id = accepted.pop("run_id")
            alert = alerting.Alert(**{k: v for k, v in accepted.items() if k != "key"})
            print(f"retrain: {run_id} for {alert.name} {alert.labels}")
            return {
                "run_id": run_id,
                "conf": {"alert": alert.for_conf(), "train_without_new_data": r.train_without_new_data},
            }

        @task.short_circuit
        def should_retrain(admitted: dict | None) -> bool:
            return admitted is not None

        admitted = admit()
        trigger_training = TriggerDagRunOperator(
            task_id="trigger_training",
            trigger_dag_id=f"{cfg.name}_training",
            trigger_run_id="{{ ti.xcom_pull(task_ids='admit')['run_id'] }}",
            conf="{{ ti.xcom_pull(task_ids='admit')['conf'] }}",
            wait_for_completion=False,
            skip_when_already_exists=True,  # a retried admission hands out the same run id
        )
        wait >> admitted
        should_retrain(admitted) >> trigger_training

    retraining_dag()


for _path in discover_model_configs(defaults.models_dir()).values():
    _cfg = load_model_config(_path)
    if _cfg.retraining.enabled and _cfg.deployment.enabled:  # drift is monitored on served models only
        build_retraining_dag(_cfg, str(_path))
