"""Operator extra links: MLflow run, MLflow model version, Data Docs, drift report.

Global links (every task shows the buttons; a task that has nothing to link leaves them empty). A
task publishes a URL with :func:`publish_link`; the API server reads it back from XCom, so the UI
never recomputes anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


class _XComLink(BaseOperatorLink):
    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from airflow.serialization.definitions.operatorlink import XComOperatorLink

        # the SDK and the core each define a TaskInstanceKey (same fields); the API server passes the core's
        link = XComOperatorLink(name=self.name, xcom_key=self.xcom_key)
        return link.get_link(operator, ti_key=ti_key)  # type: ignore[arg-type]


class MlflowRunLink(_XComLink):
    name = "MLflow run"


class MlflowModelVersionLink(_XComLink):
    name = "MLflow model version"


class DataDocsLink(_XComLink):
    name = "Data Docs"


class DriftReportLink(_XComLink):
    name = "Drift report"


ALL_LINKS = [MlflowRunLink(), MlflowModelVersionLink(), DataDocsLink(), DriftReportLink()]


def publish_link(ti: Any, link: type[BaseOperatorLink], url: str) -> None:
    """Store ``url`` for ``link`` on the running task instance (shown as a button in the UI)."""
    ti.xcom_push(key=link().xcom_key, value=url)


def mlflow_ui(tracking_uri: str) -> str:
    return tracking_uri.rstrip("/")


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_version_url(tracking_uri: str, model: str, version: str) -> str:
    return f"{mlflow_ui(tracking_uri)}/#/models/{model}/versions/{version}"
