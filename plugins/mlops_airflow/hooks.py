"""Hooks: endpoints and credentials come from Airflow Connections, never from literals in DAGs."""

from __future__ import annotations

from airflow.sdk import BaseHook

MLFLOW_CONN_ID = "mlflow_default"


class MlflowHook(BaseHook):
    """MLflow tracking server from a Connection (``AIRFLOW_CONN_MLFLOW_DEFAULT``).

    The connection's schema picks http/https (default http); login/password, when set, become
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` for the training process.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = MLFLOW_CONN_ID
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    def tracking_uri(self) -> str:
        conn = self.get_connection(self.mlflow_conn_id)
        scheme = conn.schema or (conn.conn_type if conn.conn_type in ("http", "https") else "http")
        host = conn.host or "127.0.0.1"
        if "://" in host:  # a full URL stored as host
            return host.rstrip("/")
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{host}{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point an MLflow client at this server."""
        conn = self.get_connection(self.mlflow_conn_id)
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri()}
        if conn.login:
            env["MLFLOW_TRACKING_USERNAME"] = conn.login
        if conn.password:
            env["MLFLOW_TRACKING_PASSWORD"] = conn.password
        return env
