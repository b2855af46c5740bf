"""The one pod schema of the platform and its one restricted security context.

Every pod the platform runs follows it: the training pod (``KubernetesPodOperator``, configured in
``mlops_airflow.backends``) and the model servers (:func:`mlops.deploy.kubernetes.manifests.pod_spec`):

* the pod runs as a non-root uid/gid (:data:`RUN_AS_USER`, the ``USER`` of the platform's images),
  owns its volumes (``fsGroup``) and gets the RuntimeDefault seccomp profile
  (:func:`pod_security_context`);
* every container is *restricted* (the Pod Security Standard): no privilege escalation, every
  capability dropped, non-root, RuntimeDefault seccomp, a read-only root filesystem where the caller
  asks for it (:func:`container_security_context`);
* no service-account token is mounted: no pod of the platform talks to the Kubernetes API;
* scheduling fields (service account, image pull secret, node selector, tolerations) only when set.

The settings of the model servers' pods (and of the ``kubernetes`` deployment target they belong to)
are :class:`KubernetesTargetConfig` (``deployment.kubernetes`` of a model config). Pods are plain dicts
in the Kubernetes JSON form (camelCase): no kubernetes import here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Non-root uid (and gid) of the platform's images (``USER 10001:10001`` in the Dockerfile).
RUN_AS_USER = 10001
#: ``app.kubernetes.io/part-of`` of every pod the platform starts.
PART_OF = "mlops"
#: A DNS label (RFC 1123): names of namespaces, Services, ...
DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


def pod_security_context(run_as_user: int = RUN_AS_USER) -> dict[str, Any]:
    """The pod-level security context: non-root ``run_as_user`` (uid, gid, fsGroup), RuntimeDefault seccomp."""
    if run_as_user == 0:
        raise ValueError("pods of the platform never run as root (uid 0)")
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(*, read_only_root_filesystem: bool | None = None) -> dict[str, Any]:
    """The restricted container security context; ``readOnlyRootFilesystem`` only when given."""
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if read_only_root_filesystem is not None:
        ctx["readOnlyRootFilesystem"] = read_only_root_filesystem
    return ctx


def component_labels(component: str) -> dict[str, str]:
    """The recommended labels naming the platform and the pod's part of it (``training``, ...)."""
    return {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component}


def pod_spec(
    containers: Iterable[dict[str, Any]],
    *,
    run_as_user: int = RUN_AS_USER,
    init_containers: Iterable[dict[str, Any]] = (),
    volumes: Iterable[dict[str, Any]] = (),
    service_account: str | None = None,
    image_pull_secret: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Iterable[dict[str, Any]] = (),
    **fields: Any,
) -> dict[str, Any]:
    """A ``PodSpec`` in the platform's schema (see the module doc).

    ``fields``: other ``PodSpec`` fields by their Kubernetes names (``restartPolicy``, ...). The
    containers' own security contexts are the caller's (:func:`container_security_context`).
    """
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        **fields,
        "securityContext": pod_security_context(run_as_user),
    }
    if init_containers := list(init_containers):
        spec["initContainers"] = init_containers
    spec["containers"] = list(containers)
    if volumes := list(volumes):
        spec["volumes"] = volumes
    if service_account:
        spec["serviceAccountName"] = service_account
    if image_pull_secret:
        spec["imagePullSecrets"] = [{"name": image_pull_secret}]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations := list(tolerations):
        spec["tolerations"] = tolerations
    return spec


# ----------------------------------------------------------------------------------- settings


class _Strict(BaseModel):
    # Same policy as mlops.config.model._Strict (not imported: the model config embeds these).
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toleration(_Strict):
    """A pod toleration (Kubernetes' own field names)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0)  # noqa: N815 (the Kubernetes field name)


class Resources(_Strict):
    """Requests and limits of a container, as Kubernetes quantities."""

    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})
    limits: dict[str, str] = Field(default_factory=lambda: {"cpu": "2", "memory": "2Gi"})

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: q for k, q in v.items() if not _QUANTITY.match(str(q))}
        if bad:
            raise ValueError(f"not Kubernetes quantities (e.g. 500m, 2, 1Gi): {bad}")
        return v


class KubernetesTargetConfig(_Strict):
    """Settings of the ``kubernetes`` deployment target (``deployment.kubernetes`` of a model config)."""

    namespace: str = "mlops"
    replicas: int = Field(default=10, ge=1, le=500, description="pods at 100 %: weight w% runs ~w% of them")
    standby_replicas: int = Field(
        default=1, ge=1, description="pods of a deployed candidate (canary, green) that takes no traffic"
    )
    warm_standby: bool = Field(
        default=True,
        description="stable/previous at weight 0 keep all `replicas` pods (instant switch back, blue-green)",
    )
    container_port: int = Field(default=8000, ge=1, le=65535)
    service_name: str | None = Field(default=None, description="user-facing Service; empty = the model name")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    service_port: int = Field(default=80, ge=1, le=65535)
    endpoint_url: str | None = Field(
        default=None, description="URL clients call if not the Service's cluster DNS name (Ingress, LB)"
    )
    cluster_domain: str = "cluster.local"
    resources: Resources = Field(default_factory=Resources)
    image_pull_secret: str | None = None
    service_account: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    mlflow_secret: str | None = Field(
        default=None,
        description="Secret whose keys become env vars (MLFLOW_TRACKING_URI...): only if model_uri is in MLflow",
    )
    api_token_secret: str | None = Field(
        default=None,
        description="Secret whose key `token` the servers require as bearer token on scoring routes; "
        "the deployment DAG's smoke test sends MLOPS_ENDPOINT_TOKEN, which must hold the same value",
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of the server")
    command: list[str] = Field(default_factory=lambda: ["mlops", "serve"])
    model_uri: str = Field(
        default="/opt/model",
        description="what the server loads: the serving image bakes the model in at /opt/model; "
        "or e.g. models:/{model}/{version} ({model} and {version} are filled in) with mlflow_secret",
    )
    workers: int = Field(default=1, ge=1, le=16, description="server worker processes per pod")
    run_as_user: int = Field(default=RUN_AS_USER, ge=1, description="non-root UID (and GID) of the server")
    read_only_root_filesystem: bool = True
    tmp_size_limit: str = Field(default="1Gi", description="emptyDir at /tmp (model download, metrics)")
    prometheus_url: str | None = Field(default=None, description="Prometheus serving the analysis metrics")
    prometheus_timeout_s: float = Field(default=10.0, gt=0)
    prometheus_namespace_label: str | None = Field(
        default="namespace", description="series label holding the pod's namespace (empty: not filtered)"
    )
    prometheus_pod_label: str | None = Field(
        default="pod", description="series label holding the pod name (empty: not filtered)"
    )
    argo_rollouts: Literal["auto", "never", "always"] = Field(
        default="auto", description="auto: a Rollout when the cluster has the Argo Rollouts CRD"
    )
    readiness_timeout_s: float = Field(default=300.0, gt=0)
    poll_interval_s: float = Field(default=2.0, gt=0)

    @field_validator("namespace", "service_name")
    @classmethod
    def _dns_label(cls, v: str | None) -> str | None:
        if v is not None and not DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a DNS label (lowercase letters, digits, '-', max 63)")
        return v

    @field_validator("tmp_size_limit")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not _QUANTITY.match(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity (e.g. 1Gi)")
        return v

    @model_validator(mode="after")
    def _fits(self) -> KubernetesTargetConfig:
        if self.standby_replicas > self.replicas:
            raise ValueError("standby_replicas must not exceed replicas")
        return self
