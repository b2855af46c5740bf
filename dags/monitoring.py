"""Drift monitoring DAGs: ``<model>_monitoring`` per served model config (deployment enabled).

Thin wiring only: the work is in ``mlops.monitoring`` / ``mlops.drift``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Metadata, Param, dag, task
from mlops import defaults
from mlops.modelconfig import ModelConfig, discover_model_configs, load_model_config

DOC = """
### {name}: drift monitoring of the served champion

Hourly (and on demand): the requests the `@champion` of **{name}** answered in the last window (the
server's sampled prediction log) are compared with the reference profile its training run stored
(`drift/reference_profile.json`): KS and PSI per numeric feature, chi-square / PSI / Jensen-Shannon per
categorical one, the score distribution too; Benjamini-Hochberg across features plus effect-size
thresholds decide. Too few requests = *insufficient data*, never an alarm.

1. **check_drift**: the result, an HTML report (the task's *Drift report* button) and an MLflow run in
   experiment `{name}-monitoring`; every result names the version and the DVC revision it was
   trained on.
2. **announce_drift** (only when drift is found): an event on the **{name}_drift** Asset with the
   details, for whatever reacts to drift.

3. **publish_metrics** (every check): `mlops_drift_detected`, `mlops_drift_share_ratio` and per-feature
   `mlops_drift_feature_*` gauges (labels model, model_version, feature) to the Pushgateway, where the
   `ModelDriftDetected` rule alerts on them (without Prometheus: the local alert source, same rule).
   **{name}_retraining** retrains on that alert.

Config: `{config}`.
"""


def drift_asset(model: str) -> Asset:
    return Asset(name=f"{model}_drift", uri=f"mlops://{model}/drift", group="monitoring")


def build_monitoring_dag(cfg: ModelConfig, config_path: str) -> None:
    drift = drift_asset(cfg.name)

    @dag(
        dag_id=f"{cfg.name}_monitoring",
        schedule="@hourly",
        catchup=False,
        max_active_runs=1,
        tags=[f"model:{cfg.name}", "stage:monitoring"],
        doc_md=DOC.format(name=cfg.name, config=config_path),
        default_args={"owner": cfg.owner, "retries": 2, "retry_delay": timedelta(seconds=30)},
        params={
            "window_hours": Param(1.0, type="number", exclusiveMinimum=0, title="Window (hours of traffic)"),
            "version": Param("", type="string", title="Model version", description="Empty: @champion."),
            "since": Param(
                "",
                type="string",
                title="Since (ISO 8601, UTC)",
                description="Traffic since this moment (e.g. a deployment) instead of the window.",
            ),
        },
    )
    def monitoring_dag() -> None:
        @task
        def check_drift(params=None, ti=None) -> dict:
            from datetime import datetime

            from airflow.sdk import conf
            from airflow.sdk.exceptions import AirflowSkipException
            from mlops.monitoring import check_drift as run_check
            from mlops.settings import get_settings
            from mlops_airflow.hooks import MlflowHook
            from mlops_airflow.links import DriftReportLink, MlflowRunLink, mlflow_run_url, publish_link
            from mlops_airflow.reports_app import report_url

            s = get_settings()
            uri = MlflowHook().tracking_uri()
            try:
                summary = run_check(
                    cfg,
                    uri,
                    s.home / "predictions" / cfg.name,
                    s.reports_root,
                    window_hours=float(params["window_hours"]),
                    version=params["version"] or None,
                    since=datetime.fromisoformat(params["since"]).timestamp() if params["since"] else None,
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
            from mlops import alerting
            from mlops.settings import get_settings

            s = get_settings()
            done = alerting.publish_drift(summary, s.pushgateway_url, alerting.local_store(s.home))
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

        summary = check_drift()
        publish_metrics(summary)
        is_drift(summary) >> announce_drift(summary)

    monitoring_dag()


for _path in discover_model_configs(defaults.models_dir()).values():
    _cfg = load_model_config(_path)
    if _cfg.deployment.enabled:
        build_monitoring_dag(_cfg, str(_path))
