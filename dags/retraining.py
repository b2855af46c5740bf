"""Alert-driven retraining DAGs: ``<model>_retraining`` per model config with retraining enabled.

Thin wiring only: alert sources and storm protection are in ``mlops.alerting`` (``sources``, ``ledger``),
the deferrable sensor in ``mlops_airflow.alerts``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task
from mlops.config import defaults
from mlops.config.model import ModelConfig, discover_model_configs, load_model_config
from mlops_airflow.alerts import AlertSensor, TriggerAdmittedRunOperator

DOC = """
### {name}: retraining on alerts

Always on (a continuous schedule: one run waits at a time, deferred in the triggerer, no worker slot;
when a run ends, the next one starts waiting at once):

1. **wait_for_alert**: polls the alert source every {poll:g}s (MLOPS_ALERT_SOURCE: Alertmanager,
   Prometheus, or the local rule evaluator of the embedded default) and the alert ledger, which the
   webhook receiver (`POST /mlops/alerts/webhook`) also feeds. An unreachable source is retried with
   backoff; the sensor keeps waiting.
2. **admit** (storm protection): every pending alert is decided once, atomically. At most one starts a
   retrain; the others are suppressed with their reason: same firing seen before (dedup by fingerprint),
   a training run in flight, cooldown ({cooldown:g} min after each retrain), daily budget
   ({budget} per UTC day), an alert about a version that is no longer the serving champion, or an
   alert name this model does not retrain on (it retrains on: {alerts}). See the **Alert ledger**
   (Browse menu, `/mlops/alerts/`). The Airflow Variable `mlops_retraining` can shorten the cooldown
   or change the budget without a deploy (JSON, e.g. `{{"{name}": {{"cooldown_minutes": 1}}}}`).
3. **trigger_training**: `{name}_training` with the alert in its conf (name, fingerprint, drifted
   features, report link); the MLflow run is tagged with it.

Config: `{config}` (section `retraining`).
"""


START_DATE = datetime(2025, 1, 1, tzinfo=UTC)


def build_retraining_dag(cfg: ModelConfig, config_path: str) -> None:
    # Long by design: the DAG's tasks are defined inline, in graph order, so the file reads as the DAG
    # (each task body is a few lines of wiring into include/; the logic and its tests live there).
    r = cfg.retraining

    @dag(
        dag_id=f"{cfg.name}_retraining",
        schedule="@continuous",
        # A continuous timetable needs a start date: without one, the second run gets the first run's
        # logical date, the scheduler skips it ("run already exists") and the DAG never runs again.
        start_date=START_DATE,
        max_active_runs=1,
        catchup=False,
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
        wait = AlertSensor(
            task_id="wait_for_alert",
            model=cfg.name,
            poll_interval=r.poll_interval_s,
            registered_model=cfg.registered_model_name,
        )

        @task
        def admit(ti=None) -> dict | None:
            """Decide every pending alert; returns the training run to start, or None."""
            from airflow.sdk import Variable
            from mlops.alerting import Alert, open_ledger
            from mlops.config.model import RETRAINING_OVERRIDES_VARIABLE
            from mlops.config.settings import get_settings

            overrides = Variable.get(RETRAINING_OVERRIDES_VARIABLE, default=None, deserialize_json=True)
            policy = r.with_overrides((overrides or {}).get(cfg.name))
            if policy != r:
                print(
                    f"policy from Variable {RETRAINING_OVERRIDES_VARIABLE}: cooldown "
                    f"{policy.cooldown_minutes:g} min, daily budget {policy.daily_budget}"
                )
            training = f"{cfg.name}_training"
            s = get_settings()
            ledger = open_ledger(s.home, s.alert_ledger_url)
            for row in ledger.unlaunched(cfg.name):  # accepted before: did its run get created?
                if ti.get_dr_count(dag_id=training, run_ids=[row["run_id"]]):
                    ledger.mark_launched(row["key"])
            running = ti.get_dr_count(dag_id=training, states=["queued", "running"])
            waited = ti.xcom_pull(task_ids="wait_for_alert") or {}
            if "champion" in waited:  # looked up by the sensor's trigger, where mlflow is imported already
                champion = waited["champion"]
            else:
                from mlops.registry.aliases import CHAMPION, alias_version
                from mlops.registry.client import mlflow_client
                from mlops_airflow.hooks import MlflowHook

                client = mlflow_client(MlflowHook().tracking_uri())
                champion = alias_version(client, cfg.registered_model_name, CHAMPION)
            decision = ledger.decide(
                cfg.name,
                alert_names=list(r.alerts),
                champion=champion,
                in_flight=[f"{running} run(s) of {training}"] if running else [],
                cooldown_s=policy.cooldown_minutes * 60.0,
                daily_budget=policy.daily_budget,
            )
            for key, reason in decision.suppressed:
                print(f"suppressed {key}: {reason}")
            if decision.accepted is None:
                print(f"no retrain: {len(decision.suppressed)} alert(s) suppressed (see /mlops/alerts/)")
                return None
            accepted = dict(decision.accepted)
            run_id = accepted.pop("run_id")
            alert = Alert(**{k: v for k, v in accepted.items() if k != "key"})
            print(f"retrain: {run_id} for {alert.name} {alert.labels}")
            return {
                "run_id": run_id,
                "conf": {"alert": alert.for_conf(), "train_without_new_data": r.train_without_new_data},
            }

        admitted = admit()
        trigger_training = TriggerAdmittedRunOperator(
            task_id="trigger_training", trigger_dag_id=f"{cfg.name}_training", admit_task_id="admit"
        )
        wait >> admitted >> trigger_training

    retraining_dag()


for _path in discover_model_configs(defaults.models_dir()).values():
    _cfg = load_model_config(_path)
    if _cfg.retraining.enabled and _cfg.deployment.enabled:  # drift is monitored on served models only
        build_retraining_dag(_cfg, str(_path))
