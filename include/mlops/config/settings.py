"""Typed settings of the platform, read from ``MLOPS_*`` environment variables.

One place for every knob the command line, the local stack and the container entrypoints use.
Inside Airflow, endpoints and credentials come from Connections instead (see ``plugins/``); these
settings are what the same code falls back to outside Airflow.

Every field is documented in the README's configuration table; ``mlops config`` prints the
effective values with secrets masked.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops.config import defaults
from mlops.config.secrets import SECRET_FIELDS, read_secrets_file


class Settings(BaseSettings):
    """Effective configuration. Field names map to ``MLOPS_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore", env_file_encoding="utf-8")

    def __init__(self, **values: Any) -> None:  # field values, validated by pydantic
        values.setdefault("_env_file", defaults.project_dir() / ".env")  # the project's .env, if any
        super().__init__(**values)

    home: Path = Field(
        default=defaults.DEFAULT_HOME,
        description="State folder of the local stack: databases, logs, PID files, artifacts.",
    )
    data_root: Path = Field(
        default=defaults.DEFAULT_DATA_ROOT,
        description="Root of landing/, quarantine/ and accepted batches.",
    )
    dvc_remote: str | None = Field(
        default=None,
        description="DVC remote URL for accepted batches. Empty: the folder <data_root>/dvc-remote.",
    )
    reports_dir: Path | None = Field(
        default=None,
        description="Where validation Data Docs and reports are written. Empty: <home>/reports.",
    )
    models_dir: Path = Field(
        default=defaults.BUILTIN_MODELS_DIR,
        description="Folder of model config files (one YAML per model).",
    )
    host: str = Field(default="127.0.0.1", description="Interface every local service binds to.")
    airflow_port: int = Field(default=8080, description="Port of the Airflow api-server (UI and REST API).")
    mlflow_port: int = Field(default=5000, description="Port of the MLflow tracking server.")
    serving_port: int = Field(default=8000, description="Port of the local model endpoint (mlops serve).")
    serving_model: str = Field(
        default="churn", description="Model whose @champion the local endpoint serves once one exists."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow server used outside Airflow. Empty: the local stack's server.",
    )
    admin_user: str = Field(default="admin", description="Login of the local Airflow UI.")
    admin_password: SecretStr = Field(
        default=SecretStr(""),
        description="Password of the local Airflow UI (secret). Empty: generated on first `make up` "
        "into <home>/secrets.env (0600).",
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Secret shared by Airflow's components to sign API tokens (secret). Empty: generated.",
    )
    fernet_key: SecretStr = Field(
        default=SecretStr(""),
        description="Key Airflow encrypts connections and variables with (secret). Empty: generated.",
    )
    training_backends: str = Field(
        default=defaults.DEFAULT_TRAINING_BACKENDS,
        description="Backends training DAGs offer, comma-separated (local, docker, kubernetes).",
    )
    docker_url: str = Field(
        default=defaults.DEFAULT_DOCKER_URL,
        description="Docker-API engine for the docker training backend (Docker or Podman socket).",
    )
    start_timeout: int = Field(default=180, description="Seconds `make up` waits for each service.")
    deploy_target: str | None = Field(
        default=None, description="Overrides every model's deployment.target (local or kubernetes)."
    )
    image_registry: str = Field(
        default="127.0.0.1:5001", description="Registry serving images are pushed to."
    )
    base_image: str = Field(
        default="localhost/mlops-python-base:bookworm",
        description="BASE_IMAGE build argument of the Dockerfile.",
    )

    alert_source: str | None = Field(
        default=None,
        description="Where the retraining sensor reads alerts: alertmanager, prometheus or local. "
        "Empty: alertmanager when `make up` runs it (Debian packages installed), else local.",
    )
    prometheus_url: str = Field(default="http://127.0.0.1:9090", description="Prometheus server.")
    alertmanager_url: str = Field(default="http://127.0.0.1:9093", description="Alertmanager.")
    pushgateway_url: str | None = Field(
        default=None,
        description="Pushgateway drift metrics are pushed to. Empty: the local stack's when it runs "
        "(http://127.0.0.1:9091), else none (the local alert source gets them).",
    )
    alert_webhook_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token Alertmanager's webhook must send to /mlops/alerts/webhook (secret). "
        "Empty: generated.",
    )
    alert_ledger_url: str | None = Field(
        default=None,
        description="Database of the alert ledger, as a SQLAlchemy URL (e.g. postgresql+psycopg://mlops@db/mlops; "
        "the password from PGPASSWORD or ~/.pgpass, not the URL). Empty: the SQLite file <home>/alerts/ledger.db.",
    )
    endpoint_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token the model endpoint's scoring routes require (secret; 24+ characters). "
        "Empty: no authentication, allowed only when services bind to the loopback interface.",
    )

    @model_validator(mode="after")
    def _secrets_from_home(self) -> Settings:
        """Secrets not given by the environment or ``.env`` come from ``<home>/secrets.env`` when it exists."""
        stored = read_secrets_file(self.home)
        for name in SECRET_FIELDS:
            if not getattr(self, name).get_secret_value() and stored.get(name):
                object.__setattr__(self, name, SecretStr(stored[name]))
        return self

    @field_validator("home", "data_root", "models_dir", "reports_dir", mode="after")
    @classmethod
    def _resolve(cls, v: Path | None) -> Path | None:
        return None if v is None else defaults.resolve_path(v)

    @cached_property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI to use outside Airflow."""
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def reports_root(self) -> Path:
        """Where Data Docs and reports are written: ``reports_dir``, else ``<home>/reports``."""
        return self.reports_dir or self.home / "reports"

    @property
    def airflow_url(self) -> str:
        """Base URL of the local Airflow api-server (UI and REST API)."""
        return f"http://{self.host}:{self.airflow_port}"

    def as_env(self) -> dict[str, str]:
        """Every setting but the secrets as its ``MLOPS_*`` variable: what child services inherit.

        Secrets stay out of child environments: a child that needs one reads ``<home>/secrets.env``
        (``MLOPS_HOME`` is passed) or is given that one variable explicitly.
        """
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                continue
            if value is not None:
                env[f"MLOPS_{name.upper()}"] = str(value)
        return env

    def endpoint_headers(self) -> dict[str, str]:
        """Headers every client of the model endpoint sends: the bearer token, when one is set."""
        token = self.endpoint_token.get_secret_value()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets shown as ``**********``."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif name == "alert_ledger_url" and value:
                from sqlalchemy.engine import make_url

                out[name] = make_url(value).render_as_string(hide_password=True)  # a password in it: masked
            else:
                out[name] = "" if value is None else str(value)
        out["tracking_uri (effective)"] = self.tracking_uri
        return out


def get_settings() -> Settings:
    """Settings from the current environment (a new object each call: tests patch the environment)."""
    return Settings()
