"""Kubernetes objects of the ``kubernetes`` deployment target, rendered as plain dicts.

Pure functions (no API calls, no kubernetes import): what :mod:`mlops.deploy.kubernetes.target` applies, and
what the unit tests validate against the Kubernetes OpenAPI schemas (``kubernetes-validate``). The
target's settings (:class:`~mlops.config.pods.KubernetesTargetConfig`) and the pod schema every pod
follows live in :mod:`mlops.config.pods`.

Objects of model ``m`` (``_`` becomes ``-`` in Kubernetes names), in one namespace:

* Deployment ``m-<role>`` per deployed role (``stable``, ``canary``, ``green``, ``previous``): labels
  ``app=m``, ``role=<role>``, ``model-version=<v>``; pod template adds ``serving=true|false``;
* Service ``m-<role>`` per role (selector ``app, role``): that backend alone, for smoke tests and
  direct checks, routed or not;
* Service ``m`` (or ``service_name``): the user-facing endpoint; its selector decides who takes traffic
  (see :func:`main_selector`); the weights live in its annotation ``mlops/weights``;
* with Argo Rollouts: Rollout ``m`` (canary strategy) runs stable and the routed candidate; staged
  roles stay plain Deployments (see :mod:`mlops.deploy.kubernetes.target`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from mlops.config import pods
from mlops.config.pods import DNS_LABEL, KubernetesTargetConfig
from mlops.deploy.target import PREVIOUS, ROLES, STABLE, DeploymentError
from mlops.serving.settings import ENV_API_TOKEN

#: Label keys (the brief of issue 4 names them; Prometheus relabeling may rely on them).
APP, ROLE, VERSION, SERVING = "app", "role", "model-version", "serving"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "mlops"
#: Annotations carrying the target's state (the cluster is the only store).
ANN_WEIGHTS = "mlops/weights"
ANN_MODE = "mlops/mode"
ANN_IMAGE = "mlops/image"
ANN_VERSION = "mlops/version"
ANN_CANDIDATE = "mlops/candidate"
ANN_STABLE_VERSION = "mlops/stable-version"
ANN_STABLE_IMAGE = "mlops/stable-image"
MODE_DEPLOYMENTS, MODE_ARGO = "deployments", "argo-rollouts"
CONTAINER = "server"
ROLLOUT_API = "argoproj.io/v1alpha1"
ROLLOUTS_CRD = "rollouts.argoproj.io"

_DIGEST_REF = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._:/-]*?)(?::[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
#: Longest role suffix ("-previous") must still fit a 63-character Service name.
_MAX_MODEL_NAME = 63 - len("-previous")


# ----------------------------------------------------------------------------------------- names


def k8s_name(model: str) -> str:
    """The model name as a Kubernetes name part (``_`` -> ``-``), checked to fit every object name."""
    name = model.replace("_", "-")
    if not DNS_LABEL.match(name) or len(name) > _MAX_MODEL_NAME:
        raise DeploymentError(
            f"model name {model!r} cannot name Kubernetes objects: lowercase letters, digits, '_' or '-', "
            f"starting with a letter, at most {_MAX_MODEL_NAME} characters"
        )
    return name


def role_name(model: str, role: str) -> str:
    """Name of the Deployment and Service of one role of ``model``."""
    return f"{k8s_name(model)}-{role}"


def service_name(model: str, cfg: KubernetesTargetConfig) -> str:
    """Name of the model's main Service (the one clients call): the configured one, else the model's."""
    return cfg.service_name or k8s_name(model)


def check_role(role: str) -> str:
    """``role``, if it is one of ``ROLES``; a DeploymentError otherwise."""
    if role not in ROLES:
        raise DeploymentError(f"unknown role {role!r}; one of {ROLES}")
    return role


def check_version(version: str) -> str:
    """``version`` as a string, if it is a valid Kubernetes label value; a DeploymentError otherwise."""
    version = str(version)
    if not _LABEL_VALUE.match(version):
        raise DeploymentError(f"model version {version!r} is not a valid Kubernetes label value")
    return version


def check_image(image: str | None) -> str:
    """``image`` if it names an image by digest; a mutable tag (or nothing) is refused."""
    if not image:
        raise DeploymentError(
            "the kubernetes target needs the serving image by digest (repo@sha256:<64 hex>); got none"
        )
    if not _DIGEST_REF.match(image):
        raise DeploymentError(
            f"image {image!r} is not pinned by digest: a tag is mutable, so the pods could run another "
            "build than the one tested. Deploy repo@sha256:<64 hex digest> (the image build step reports it)"
        )
    return image


# ----------------------------------------------------------------------------------------- weights


def replicas_for(weight: int, total: int) -> int:
    """Pods of a role at ``weight`` % of ``total``: round half up, at least 1 when routed, 0 at 0 %.

    The Service spreads connections evenly over ready pods, so the traffic share is replicas/sum of
    routed replicas: exact at multiples of 100/total, approximate otherwise (1 % of 10 pods: 1 pod).
    """
    if weight <= 0:
        return 0
    return max(1, math.floor(total * weight / 100 + 0.5))


def standby_for(role: str, cfg: KubernetesTargetConfig) -> int:
    """Pods of a role that takes no traffic (deployed, reachable through its own Service)."""
    if cfg.warm_standby and role in (STABLE, PREVIOUS):
        return cfg.replicas
    return cfg.standby_replicas


def check_weights(weights: dict[str, int]) -> dict[str, int]:
    """``weights``, if known roles get integers >= 0 summing to 100; a DeploymentError otherwise."""
    for role in weights:
        check_role(role)
    bad = {r: w for r, w in weights.items() if isinstance(w, bool) or not isinstance(w, int) or w < 0}
    if bad or sum(weights.values()) != 100:
        raise DeploymentError(f"weights must be integers >= 0 summing to 100, got {weights}")
    return {r: int(w) for r, w in weights.items()}


def main_selector(model: str, weights: dict[str, int]) -> dict[str, str]:
    """Who the user-facing Service routes to.

    * one role at 100 %: pinned to that role (``app, role``), whatever the pods' ``serving`` label: a
      blue-green switch or a rollback to a warm role is one Service update, no pod restarts;
    * a split (or nothing routed yet): ``app, serving=true``; the routed roles' pods carry
      ``serving=true`` and the others ``serving=false``, and the replica counts split the traffic.
    """
    full = [r for r, w in weights.items() if w == 100]
    if full:
        return {APP: k8s_name(model), ROLE: full[0]}
    return {APP: k8s_name(model), SERVING: "true"}


# ----------------------------------------------------------------------------------------- pods


def _labels(model: str, **extra: str) -> dict[str, str]:
    return {APP: k8s_name(model), **extra, MANAGED_BY: MANAGER}


def pod_spec(
    model: str, version: str, image: str, cfg: KubernetesTargetConfig, variant: str | None
) -> dict[str, Any]:
    """The server pod (the platform's pod schema, :mod:`mlops.config.pods`): non-root, restricted, a
    read-only root filesystem (writable ``/tmp``), probes on /ready and /health.

    ``variant`` None: read from the pod's ``role`` label (Argo Rollouts sets it per ReplicaSet).
    """
    uri = cfg.model_uri.format(model=model, version=version)
    variant_env: dict[str, Any] = (
        {"value": variant}
        if variant is not None
        else {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{ROLE}']"}}}
    )
    env: list[dict[str, Any]] = [
        {"name": "MLOPS_MODEL_NAME", "value": model},
        {"name": "MLOPS_MODEL_VERSION", "value": version},
        {"name": "MLOPS_SERVE_MODEL_NAME", "value": model},
        {"name": "MLOPS_SERVE_MODEL_VERSION", "value": version},
        {"name": "MLOPS_SERVE_VARIANT", **variant_env},
        {"name": "MLOPS_IMAGE_DIGEST", "value": image.rsplit("@", 1)[1]},
        {"name": "MLOPS_HOME", "value": "/tmp/mlops"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": k, "value": v} for k, v in sorted(cfg.env.items())),
    ]
    if cfg.api_token_secret:  # the token from a Secret: never in the manifest
        ref = {"secretKeyRef": {"name": cfg.api_token_secret, "key": "token"}}
        env.append({"name": ENV_API_TOKEN, "valueFrom": ref})
    args = [
        "--model-uri", uri,
        "--host", "0.0.0.0",
        "--port", str(cfg.container_port),
        "--workers", str(cfg.workers),
        "--model-name", model,
        "--model-version", version,
    ]  # fmt: skip
    if variant is not None:
        args += ["--variant", variant]  # else from MLOPS_SERVE_VARIANT, the CLI's default

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(cfg.command),
        "args": args,
        "ports": [{"name": "http", "containerPort": cfg.container_port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": dict(cfg.resources.requests), "limits": dict(cfg.resources.limits)},
        # Model download and warm-up may take minutes: liveness waits for the startup probe.
        "startupProbe": probe("/health", 5, max(1, math.ceil(cfg.readiness_timeout_s / 5))),
        "readinessProbe": probe("/ready", 5, 3),
        "livenessProbe": probe("/health", 10, 3),
        # Endpoints drop the pod before SIGTERM arrives: in-flight requests finish.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "securityContext": pods.container_security_context(
            read_only_root_filesystem=cfg.read_only_root_filesystem
        ),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if cfg.mlflow_secret:
        container["envFrom"] = [{"secretRef": {"name": cfg.mlflow_secret}}]
    return pods.pod_spec(
        [container],
        run_as_user=cfg.run_as_user,
        volumes=[{"name": "tmp", "emptyDir": {"sizeLimit": cfg.tmp_size_limit}}],
        service_account=cfg.service_account,
        image_pull_secret=cfg.image_pull_secret,
        node_selector=cfg.node_selector,
        tolerations=[t.model_dump(exclude_none=True) for t in cfg.tolerations],
        enableServiceLinks=False,
        terminationGracePeriodSeconds=30,
    )


def _pod_annotations(cfg: KubernetesTargetConfig) -> dict[str, str]:
    # The common scrape-discovery convention; a PodMonitor on the `http` port works as well.
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(cfg.container_port),
        "prometheus.io/path": "/metrics",
    }


def deployment(
    model: str,
    role: str,
    version: str,
    image: str,
    replicas: int,
    serving: bool,
    cfg: KubernetesTargetConfig,
) -> dict[str, Any]:
    """Deployment ``m-<role>``: ``replicas`` pods of ``version``; ``serving`` sets the pods' label."""
    name = role_name(model, role)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": _labels(model, **{ROLE: role, VERSION: version}),
            "annotations": {ANN_IMAGE: image, ANN_VERSION: version},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            # Immutable once created: app and role only (version and serving change in place).
            "selector": {"matchLabels": {APP: k8s_name(model), ROLE: role}},
            # New pods first: capacity never drops while a role is rolled.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "progressDeadlineSeconds": max(60, math.ceil(cfg.readiness_timeout_s)),
            "template": {
                "metadata": {
                    "labels": {
                        APP: k8s_name(model),
                        ROLE: role,
                        VERSION: version,
                        SERVING: "true" if serving else "false",
                    },
                    "annotations": _pod_annotations(cfg),
                },
                "spec": pod_spec(model, version, image, cfg, variant=role),
            },
        },
    }


def role_service(model: str, role: str, cfg: KubernetesTargetConfig) -> dict[str, Any]:
    """Service ``m-<role>``: the backend of one role, routed or not (smoke tests, direct checks)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": role_name(model, role),
            "namespace": cfg.namespace,
            "labels": _labels(model, **{ROLE: role}),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {APP: k8s_name(model), ROLE: role},
            "ports": [{"name": "http", "port": cfg.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def main_service(
    model: str, weights: dict[str, int], mode: str, cfg: KubernetesTargetConfig
) -> dict[str, Any]:
    """The user-facing Service; it also records the weights and the target's mode."""
    selector = (
        main_selector(model, weights) if mode == MODE_DEPLOYMENTS else {APP: k8s_name(model), SERVING: "true"}
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(model, cfg),
            "namespace": cfg.namespace,
            "labels": _labels(model),
            "annotations": {
                ANN_WEIGHTS: json.dumps({r: w for r, w in sorted(weights.items()) if w > 0}),
                ANN_MODE: mode,
            },
        },
        "spec": {
            "type": cfg.service_type,
            "selector": selector,
            "ports": [{"name": "http", "port": cfg.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def rollout(
    model: str,
    *,
    version: str,
    image: str,
    stable_role: str,
    stable_version: str,
    stable_image: str,
    candidate: str | None,
    steps: list[dict[str, Any]],
    cfg: KubernetesTargetConfig,
) -> dict[str, Any]:
    """Argo Rollouts ``Rollout`` (canary strategy, replica-count weights) serving stable + one candidate.

    ``version``/``image``: the pod template (the candidate's while a canary runs, stable's otherwise).
    ``steps``: written by the target, e.g. ``[{"setWeight": 10}, {"pause": {}}]`` holds 10 % until the
    target rewrites them (a change of steps restarts them at step 0; the final promotion is a
    ``setWeight: 100`` with no pause). Pods get ``role`` from ``stableMetadata``/``canaryMetadata``.
    """
    meta_ann = {ANN_STABLE_VERSION: stable_version, ANN_STABLE_IMAGE: stable_image}
    if candidate:
        meta_ann[ANN_CANDIDATE] = candidate
    canary: dict[str, Any] = {
        "maxSurge": "100%",
        "maxUnavailable": 0,
        "stableMetadata": {"labels": {ROLE: stable_role}},
        "canaryMetadata": {"labels": {ROLE: candidate or stable_role}},
        "steps": steps,
    }
    return {
        "apiVersion": ROLLOUT_API,
        "kind": "Rollout",
        "metadata": {
            "name": k8s_name(model),
            "namespace": cfg.namespace,
            "labels": _labels(model),
            "annotations": meta_ann,
        },
        "spec": {
            "replicas": cfg.replicas,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": max(60, math.ceil(cfg.readiness_timeout_s)),
            "selector": {"matchLabels": {APP: k8s_name(model), SERVING: "true"}},
            "template": {
                "metadata": {
                    "labels": {APP: k8s_name(model), SERVING: "true", VERSION: version},
                    "annotations": _pod_annotations(cfg),
                },
                "spec": pod_spec(model, version, image, cfg, variant=None),
            },
            "strategy": {"canary": canary},
        },
    }
