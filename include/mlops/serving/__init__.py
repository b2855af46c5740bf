"""The model server: ``mlops serve`` / ``python -m mlops.serving``.

``app`` (the ASGI app and its endpoints), ``payloads`` (request bodies, input checks, 4xx),
``model`` (resolving, loading and warming the MLflow model), ``batching`` (concurrent requests in one
model call), ``metrics`` (the Prometheus metrics and their names), ``predlog`` (the prediction log:
layout, writer and readers), ``settings``, ``workers`` (several worker processes), ``runner``
(uvicorn / gunicorn).

The names below are what other packages use; they are imported on first use, so importing this
package stays cheap (no prometheus_client, mlflow or pandas, which the runner must import later).
"""

from __future__ import annotations

from typing import Any

_HOME = {
    "HTTP_REQUESTS": "mlops.serving.metrics",
    "HTTP_REQUEST_DURATION_SECONDS": "mlops.serving.metrics",
    "PREDICTION_SCORE": "mlops.serving.metrics",
    "count_logged": "mlops.serving.predlog",
    "logged_frame": "mlops.serving.predlog",
    "predictions_dir": "mlops.serving.predlog",
    "recent_logged_rows": "mlops.serving.predlog",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
