"""The seam between the kubernetes target and a cluster: :class:`KubeApi` and its real implementation.

:class:`ClientKubeApi` runs on the official ``kubernetes`` client (in-cluster config, else kubeconfig;
server-side apply, typed reads); the tests use an in-memory cluster (``tests/fakes/kube.py``) behind the
same :class:`KubeApi`. Pods are reduced to :class:`PodState`: ready or not, and why not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mlops.deploy.kubernetes.manifests import ROLLOUT_API
from mlops.deploy.target import DeploymentError

__all__ = ["FIELD_MANAGER", "KINDS", "ClientKubeApi", "KubeApi", "PodState", "pod_report", "pod_state"]

log = logging.getLogger(__name__)

FIELD_MANAGER = "mlops-deploy"
#: The kinds of object the target manages (namespaced, as plain dicts).
KINDS = ("Deployment", "Service", "Rollout")


@dataclass(frozen=True)
class PodState:
    """What the target needs to know of one pod: ready or not, and why not."""

    name: str
    labels: dict[str, str]
    ready: bool
    phase: str = "Running"
    reasons: tuple[str, ...] = ()


@runtime_checkable
class KubeApi(Protocol):
    """The few Kubernetes calls the target makes (namespaced objects of ``KINDS``, as plain dicts)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object (``status`` included), None if absent."""
        ...

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create or update to match ``manifest`` (server-side apply); an unchanged manifest is a no-op."""
        ...

    def patch_status(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch the status subresource (Argo Rollouts: clear a pause, promote fully)."""
        ...

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete (dependents in the background); False if it was absent."""
        ...

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[PodState]:
        """Pods whose labels include ``selector``."""
        ...

    def has_crd(self, name: str) -> bool:
        """Whether the CustomResourceDefinition ``name`` (e.g. ``rollouts.argoproj.io``) exists."""
        ...


def pod_state(pod: dict[str, Any]) -> PodState:
    """A pod (API JSON, camelCase) reduced to readiness and the reasons it is not ready."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    reasons: list[str] = []
    if status.get("reason"):  # Evicted, NodeLost, ...
        reasons.append(f"{status['reason']}: {status.get('message', '')}".rstrip(": "))
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            reasons.append(f"{c.get('reason', 'Unschedulable')}: {c.get('message', '')}".rstrip(": "))
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        name = cs.get("name", "?")
        if "waiting" in state and (state["waiting"] or {}).get("reason"):
            w = state["waiting"]
            reasons.append(f"container {name}: {w['reason']}: {w.get('message', '')}".rstrip(": "))
        elif "terminated" in state and state["terminated"]:
            t = state["terminated"]
            reasons.append(f"container {name}: terminated {t.get('reason', '')} (exit {t.get('exitCode')})")
        elif not cs.get("ready") and "running" in state:
            reasons.append(f"container {name}: running, readiness probe not passing")
        if last.get("reason"):
            reasons.append(
                f"container {name}: last exit {last['reason']} (exit {last.get('exitCode')}, "
                f"{cs.get('restartCount', 0)} restarts)"
            )
    return PodState(
        name=meta.get("name", "?"),
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        phase=status.get("phase", "Unknown"),
        reasons=tuple(reasons),
    )


class ClientKubeApi:
    """:class:`KubeApi` on the official ``kubernetes`` client: server-side apply, typed reads."""

    def __init__(self, api_client: Any = None, field_manager: str = FIELD_MANAGER):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.client = api_client
        self.field_manager = field_manager
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ext = client.ApiextensionsV1Api(api_client)

    def _rollout_args(self, namespace: str) -> dict[str, str]:
        group, version = ROLLOUT_API.split("/")
        return {"group": group, "version": version, "namespace": namespace, "plural": "rollouts"}

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object (``status`` included), None if absent."""
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "Deployment":
                obj = self.apps.read_namespaced_deployment(name, namespace)
            elif kind == "Service":
                obj = self.core.read_namespaced_service(name, namespace)
            elif kind == "Rollout":
                obj = self.custom.get_namespaced_custom_object(name=name, **self._rollout_args(namespace))
            else:
                raise ValueError(f"unsupported kind {kind!r}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeploymentError(
                f"cannot read {kind} {namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc
        return self._dict(obj)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create or update to match ``manifest`` (server-side apply, forced); the object as applied."""
        from kubernetes.client.exceptions import ApiException

        kind, meta = manifest["kind"], manifest["metadata"]
        kw = {
            "field_manager": self.field_manager,
            "force": True,
            "_content_type": "application/apply-patch+yaml",  # JSON is YAML: the body goes as JSON
        }
        try:
            if kind == "Deployment":
                obj = self.apps.patch_namespaced_deployment(meta["name"], meta["namespace"], manifest, **kw)
            elif kind == "Service":
                obj = self.core.patch_namespaced_service(meta["name"], meta["namespace"], manifest, **kw)
            elif kind == "Rollout":
                obj = self.custom.patch_namespaced_custom_object(
                    name=meta["name"], body=manifest, **self._rollout_args(meta["namespace"]), **kw
                )
            else:
                raise ValueError(f"unsupported kind {kind!r}")
        except ApiException as exc:
            raise DeploymentError(
                f"cannot apply {kind} {meta['namespace']}/{meta['name']}: {exc.status} {exc.reason}: {exc.body}"
            ) from exc
        return self._dict(obj)

    def patch_status(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch the status subresource of a Rollout."""
        from kubernetes.client.exceptions import ApiException

        if kind != "Rollout":
            raise ValueError(f"status patches are only made on Rollouts, not {kind}")
        try:
            self.custom.patch_namespaced_custom_object_status(
                name=name,
                body={"status": patch},
                _content_type="application/merge-patch+json",
                **self._rollout_args(namespace),
            )
        except ApiException as exc:
            raise DeploymentError(
                f"cannot patch status of Rollout {namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete (dependents in the background); False if it was absent."""
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "Deployment":
                self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
            elif kind == "Service":
                self.core.delete_namespaced_service(name, namespace)
            elif kind == "Rollout":
                self.custom.delete_namespaced_custom_object(
                    name=name, propagation_policy="Background", **self._rollout_args(namespace)
                )
            else:
                raise ValueError(f"unsupported kind {kind!r}")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise DeploymentError(
                f"cannot delete {kind} {namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc
        return True

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[PodState]:
        """Pods in ``namespace`` whose labels include ``selector``."""
        sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = self.core.list_namespaced_pod(namespace, label_selector=sel)
        return [pod_state(self._dict(p)) for p in pods.items]

    def has_crd(self, name: str) -> bool:
        """Whether the CustomResourceDefinition ``name`` exists (one we may not read counts as absent)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.ext.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 403:
                log.warning("not allowed to read CRD %s (403): assuming it is absent", name)
                return False
            raise DeploymentError(f"cannot check for CRD {name}: {exc.status} {exc.reason}") from exc
        return True


def pod_report(pods: list[PodState], limit: int = 5) -> str:
    """One line on ``pods`` for an error message: the first ``limit`` that are not ready, and why."""
    bad = [p for p in pods if not p.ready]
    if not pods:
        return "no pods (quota, admission or scheduling: see the ReplicaSet's events)"
    if not bad:
        return f"{len(pods)} pods, all ready"
    lines = [f"{p.name} ({p.phase}): {', '.join(p.reasons) or 'not ready'}" for p in bad[:limit]]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"pods not ready: {'; '.join(lines)}{more}"
