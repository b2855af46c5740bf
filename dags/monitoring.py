"""Drift monitoring DAGs: ``<model>_monitoring`` per served model config (deployment enabled).

Thin wiring only: the work is in ``mlops.monitoring.check`` / ``mlops.drift.detect``, the published metrics
in ``mlops.monitoring.metrics``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, Metadata, Param, dag, task
from mlops.config import defaults
from mlops.config.model import ModelConfig, discover_model_configs, load_model_config
from mlops_airflow.assets import champion_model_asset, drift_asset
from mlops_airflow.schedules import cron

DOC = """
### {name}: drift monitoring of the served champion

Hourly, on every new `@champion` (the **{name}_champion** Asset: a promotion or a rollback), and on
demand: the requests the `@champion` of **{name}** answered (the server's sampled prediction log) are
compared with the reference profile its training run stored (`drift/reference_profile.json`): KS and
PSI per numeric feature, chi-square / PSI / Jensen-Shannon per categorical one, the score distribution
too; Benjamini-Hochberg across features plus effect-size thresholds decide. Too few requests =
*insufficient data*, never an alarm. A window never starts before the champion took over, so a
verdict on a version is about traffic that version served as champion.

1. **window**: which version and since when. After a promotion it waits (rescheduled, no worker
   slot held) until the new champion has served enough requests to judge (the drift detector's minimum), up to an hour;
   then the hourly schedule takes over.
2. **check_drift**: the result, an HTML report (the task's *Drift report* button) and an MLflow run in
   experiment `{name}-monitoring`; every result names the version and the DVC revision it was
   trained on.
3. **publish_metrics** (every check): `mlops_drift_detected`, `mlops_drift_share_ratio` and per-feature
   `mlops_drift_feature_*` gauges (labels model, model_version, feature) to the Pushgateway, where the
   `ModelDriftDetected` rule alerts on them (without Prometheus: the local alert source, same rule).
   **{name}_retraining** retrains on that alert.
4. **announce_drift** (only when drift is found): an event on the **{name}_drift** Asset with the
   details, for whatever reacts to drift.

Config: `{config}`.
"""

FIRST_CHECK_TIMEOUT_S = 3600.0  # after a promotion, wait this long at most for enough traffic


def build_monitoring_dag(cfg: ModelConfig, config_path: str) -> None:
    # Long by design: the DAG's tasks are defined inline, in graph order, so the file reads as the DAG
    # (each task body is a few lines of wiring into include/; the logic and its tests live there).
    drift = drift_asset(cfg.name)
    champion = champion_model_asset(cfg.name)

    @dag(
        dag_id=f"{cfg.name}_monitoring",
        schedule=AssetOrTimeSchedule(timetable=cron("0 * * * *"), assets=champion),
        catchup=False,
        max_active_runs=1,
        tags=[f"model:{cfg.name}", "stage:monitoring"],
        doc_md=DOC.format(name=cfg.name, config=config_path),
        default_args={"owner": cfg.owner, "retries": 2, "retry_delay": timedelta(seconds=30)},
        params={
            "window_hours": Param(1.0, type="number", exclusiveMinimum=0, title="Window (hours of traffic)"),
            "version": Param(
                None, type=["null", "string"], title="Model version", description="Empty: @champion."
            ),
            "since": Param(
                None,
                type=["null", "string"],
                title="Since (ISO 8601, UTC)",
                description="Traffic since this moment (e.g. a deployment) instead of the window.",
            ),
        },
    )
    def monitoring_dag() -> None:
        @task.sensor(
            poke_interval=30,
            timeout=FIRST_CHECK_TIMEOUT_S,
            mode="reschedule",
            soft_fail=True,
            doc_md="Which version and since when; after a promotion, waits for enough of its traffic.",
        )
        def window(params=None, triggering_asset_events=None):
            from datetime import datetime

            from airflow.sdk import PokeReturnValue
            from mlops.config.settings import get_settings
            from mlops.drift import DriftThresholds
            from mlops.serving.predlog import count_logged, predictions_dir

            promoted = [ev.extra or {} for evs in (triggering_asset_events or {}).values() for ev in evs]
            if not promoted or not promoted[-1].get("version"):  # hourly, or triggered by hand
                since = datetime.fromisoformat(params["since"]).timestamp() if params["since"] else None
                return PokeReturnValue(True, {"version": params["version"] or None, "since": since})
            event = promoted[-1]
            since = datetime.fromisoformat(event["promoted_at"]).timestamp()
            min_rows = DriftThresholds().min_rows
            seen = count_logged(predictions_dir(get_settings().home, cfg.name), since, event["version"])
            print(
                f"v{event['version']} is champion since {event['promoted_at']}: {seen} of {min_rows} requests"
            )
            return PokeReturnValue(seen >= min_rows, {"version": event["version"], "since": since})

        @task
        def check_drift(win: dict, params=None, ti=None) -> dict:
            from airflow.sdk import conf
            from airflow.sdk.exceptions import AirflowSkipException
            from mlops.config.settings import get_settings
            from mlops.monitoring.check import check_drift as run_check
            from mlops.serving.predlog import predictions_dir
            from mlops_airflow.hooks import MlflowHook
            from mlops_airflow.links import DriftReportLink, MlflowRunLink, mlflow_run_url, publish_link
            from mlops_airflow.reports_app import report_url

            s = get_settings()
            uri = MlflowHook().tracking_uri()
            try:
                summary = run_check(
                    cfg,
                    uri,
                    predictions_dir(s.home, cfg.name),
                    s.reports_root,
                    window_hours=float(params["window_hours"]),
                    version=win["version"],
                    since=win["since"],
                )
            except LookupError as exc:
                raise AirflowSkipException(str(exc)) from exc
            base = conf.get("api", "base_url", fallback=s.airflow_url)
            summary["report_url"] = report_url(base, s.reports_root, summary["report"])
            publish_link(ti, DriftReportLink, summary["report_url"])
            publish_link(
                ti, MlflowRunLink, mlflow_run_url(uri, summary["experiment_id"], summary["mlflow_run_id"])
            )
            print(summary["message"])
            return summary

        @task
        def publish_metrics(summary: dict) -> str:
            """Drift metrics for Prometheus (Pushgateway), or the local alert source without one."""
            from mlops.alerting import local_store
            from mlops.config.settings import get_settings
            from mlops.monitoring.metrics import publish_drift

            s = get_settings()
            done = publish_drift(summary, s.pushgateway_url, local_store(s.home))
            print(done)
            return done

        @task.short_circuit
        def is_drift(summary: dict) -> bool:
            return summary["status"] == "drift"

        @task(outlets=[drift])
        def announce_drift(summary: dict):
            """A drift Asset event carrying the details (model, version, DVC revision, features, report)."""
            yield Metadata(drift, {k: summary[k] for k in (
                "model", "model_version", "dvc_rev", "drifted_features", "drifted_share", "score_drift",
                "rows", "report", "mlflow_run_id",
            )})  # fmt: skip
            return summary["drifted_features"]

        summary = check_drift(window())
        publish_metrics(summary)
        is_drift(summary) >> announce_drift(summary)

    monitoring_dag()


for _path in discover_model_configs(defaults.models_dir()).values():
    _cfg = load_model_config(_path)
    if _cfg.deployment.enabled:
        build_monitoring_dag(_cfg, str(_path))
