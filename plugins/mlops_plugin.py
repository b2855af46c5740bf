"""The platform's Airflow plugin: extra links on tasks, the reports app, and a link to MLflow."""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin
from mlops_airflow.links import ALL_LINKS
from mlops_airflow.reports_app import URL_PREFIX, create_app


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    global_operator_extra_links = ALL_LINKS
    external_views = [
        {
            "name": "MLflow",
            "href": os.environ.get("MLOPS_MLFLOW_UI_URL", "http://127.0.0.1:5000"),
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "Alert ledger",
            "href": "/mlops/alerts/",
            "destination": "nav",
            "category": "browse",
        },
    ]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "MLOps reports"}]
