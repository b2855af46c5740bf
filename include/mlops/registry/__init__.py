"""The MLflow model registry: aliases, the one client factory, and every tag key the platform writes.

``aliases``: ``@challenger`` / ``@champion`` / ``@previous`` (never stages) and the gate record;
``client``: :func:`mlflow_client`; ``tags``: the tag keys. Cheap to import (mlflow is imported lazily).
"""

from mlops.registry import tags
from mlops.registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version
from mlops.registry.client import mlflow_client

__all__ = ["CHALLENGER", "CHAMPION", "PREVIOUS", "alias_version", "mlflow_client", "tags"]
