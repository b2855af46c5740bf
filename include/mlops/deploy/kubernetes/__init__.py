"""The kubernetes deployment target: Deployments or Argo Rollouts behind one Service.

``target`` (:class:`KubernetesTarget`, the :class:`~mlops.deploy.target.DeploymentTarget`), ``api``
(the thin client over the Kubernetes API), ``argo`` (the Argo Rollouts path), ``manifests`` (the
objects as plain dicts). Its settings, :class:`KubernetesTargetConfig`, live in
:mod:`mlops.config.pods` with the pod schema. The names below are imported on first use, so importing
this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.config.pods import KubernetesTargetConfig
    from mlops.deploy.kubernetes.target import KubernetesTarget

__all__ = ["KubernetesTarget", "KubernetesTargetConfig"]

_HOME = {
    "KubernetesTarget": "mlops.deploy.kubernetes.target",
    "KubernetesTargetConfig": "mlops.config.pods",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
