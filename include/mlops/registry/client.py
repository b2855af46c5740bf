"""The one place an MLflow client is built from a tracking URI (mlflow imported lazily: it costs ~1.5 s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


def mlflow_client(tracking_uri: str | None) -> MlflowClient:
    """An MLflow client of the tracking server (and its registry) at ``tracking_uri``.

    ``None``: MLflow's own default (``MLFLOW_TRACKING_URI``).

    Credentials, when the server needs them, come from ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` in the environment (the Airflow hook sets them from the Connection).
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def registry_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the tracking server is away (refused, timed out, 5xx), not a bad request.

    MLflow's REST client wraps connection errors as ``MlflowException("API request to ... failed with
    exception ...")`` (``INTERNAL_ERROR``: HTTP 500); a server or proxy answering 5xx maps the same way.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() >= 500
    return isinstance(exc, OSError)  # socket errors; requests' exceptions are OSErrors too
