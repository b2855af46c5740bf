"""The ``kubernetes`` deployment target: model servers as Deployments behind one Service.

Traffic is split by replica counts: a role at weight ``w`` % runs ``round(replicas * w / 100)`` pods
(at least 1 when ``w`` > 0) and the user-facing Service spreads connections over the ready pods of
the routed roles. Who is routed is decided by the Service's selector
(:func:`~mlops.deploy.k8s_manifests.main_selector`):

* one role at 100 %: the selector pins that role (``app, role``). A blue-green switch, a rollback to a
  warm ``previous`` and the end of a canary are one Service update, with no pod restart;
* a split (canary steps): the selector is ``app, serving=true``; the routed roles' pod templates carry
  ``serving=true``, the others ``serving=false``. Flipping that label rolls the role's pods (new pods
  first, ``maxUnavailable: 0``), so entering or leaving a split costs one roll of the pods concerned.

A role that takes no traffic (a staged candidate right after :meth:`KubernetesTarget.deploy`, a
``previous`` kept for rollback) still has pods: ``standby_replicas`` (``replicas`` for stable and
previous when ``warm_standby``), reachable through its own Service ``<model>-<role>`` (the
:class:`~mlops.deploy.target.Backend` URL: smoke tests, direct checks) but never through the
user-facing Service: its pods are ``serving=false`` and the selector never pins it.

The cluster is the only store: each role's version and image are annotations of its Deployment, the
weights an annotation of the user-facing Service. Images are always deployed by digest.

**Argo Rollouts** (``argo_rollouts: auto`` and the ``rollouts.argoproj.io`` CRD present, or
``always``): a ``Rollout`` named after the model (canary strategy without a traffic router: Argo splits
by replica counts too) runs stable and the routed candidate; weights are the Rollout's ``steps``,
rewritten by this target on every change (``[{setWeight: w}, {pause: {}}]``; Argo restarts the steps
when they change, and the target clears the pause so the new ``setWeight`` runs); promotion is
``promoteFull``. A staged candidate stays a plain Deployment with ``serving=false`` until it is routed
(Argo's basic canary cannot run canary pods at weight 0: ``setCanaryScale`` needs a traffic router).
The mode is recorded on the Service when first created, so installing Argo later does not switch a
running model. The Rollout path is checked structurally only (no Rollout schema offline, no controller
here): see the tests.

All API calls go through :class:`KubeApi`: :class:`ClientKubeApi` on the official client (in-cluster
config, else kubeconfig), :class:`FakeKubeApi` in memory for tests (simulates Deployment/Rollout
controllers and pod readiness).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mlops.deploy import k8s_manifests as m
from mlops.deploy.k8s_manifests import (
    APP,
    MODE_ARGO,
    MODE_DEPLOYMENTS,
    ROLE,
    SERVING,
    VERSION,
    KubernetesTargetConfig,
)
from mlops.deploy.target import (
    PREVIOUS,
    ROLES,
    SCORING_ROUTES,
    STABLE,
    Backend,
    DeploymentError,
    MetricsSnapshot,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ClientKubeApi",
    "FakeKubeApi",
    "KubeApi",
    "KubernetesTarget",
    "KubernetesTargetConfig",
    "PodState",
    "pod_state",
]

log = logging.getLogger(__name__)

FIELD_MANAGER = "mlops-deploy"
KINDS = ("Deployment", "Service", "Rollout")


# ------------------------------------------------------------------------------------- the API seam


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
        group, version = m.ROLLOUT_API.split("/")
        return {"group": group, "version": version, "namespace": namespace, "plural": "rollouts"}

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
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
        sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = self.core.list_namespaced_pod(namespace, label_selector=sel)
        return [pod_state(self._dict(p)) for p in pods.items]

    def has_crd(self, name: str) -> bool:
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


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass
class _Sim:
    """What the fake controllers remember of one workload between calls."""

    ready_template: dict[str, Any] | None = None
    ready_replicas: int = 0
    stable_template: dict[str, Any] | None = None


class FakeKubeApi:
    """In-memory :class:`KubeApi` that behaves like a small cluster with instant, healthy controllers.

    * Deployments converge at once: every pod of the current template is ready, old pods are gone;
      ``not_ready[name] = reason`` makes the new pods of Deployment/Rollout ``name`` never ready (the
      old ready pods stay, as with ``maxUnavailable: 0``), with ``reason`` as their container state.
    * Rollouts (basic canary): the first template is stable; a new template runs the steps up to the
      first pause (canary pods = last ``setWeight``), and is promoted when the steps have no pause or
      ``status.promoteFull`` is set. ``stableMetadata``/``canaryMetadata`` labels land on the pods.
    * ``validate_version``: every Deployment and Service applied is validated (strict) against that
      Kubernetes version's schema with ``kubernetes-validate``.
    * ``writes`` counts applies that changed something; ``log`` records every call.
    """

    def __init__(self, *, crds: Iterable[str] = (), validate_version: str | None = None):
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.crds = set(crds)
        self.not_ready: dict[str, str] = {}
        self.validate_version = validate_version
        self.writes = 0
        self.log: list[tuple[str, ...]] = []
        self.applied: list[dict[str, Any]] = []
        self._sim: dict[tuple[str, str, str], _Sim] = {}

    # -- KubeApi

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.log.append(("get", kind, name))
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return None
        self._reconcile(kind, namespace, name)
        return copy.deepcopy(obj)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kind, meta = manifest["kind"], manifest["metadata"]
        assert kind in KINDS, kind
        self.log.append(("apply", kind, meta["name"]))
        self.applied.append(copy.deepcopy(manifest))
        if self.validate_version and kind in ("Deployment", "Service"):
            import kubernetes_validate

            kubernetes_validate.validate(manifest, self.validate_version, strict=True)
        key = (kind, meta["namespace"], meta["name"])
        new = copy.deepcopy(manifest)
        cur = self.objects.get(key)
        if cur is None:
            new["metadata"]["generation"] = 1
            new["status"] = {}
            self._sim[key] = _Sim()
        else:
            same_spec = cur["spec"] == new["spec"]
            same_meta = all(
                cur["metadata"].get(k) == new["metadata"].get(k) for k in ("labels", "annotations")
            )
            if same_spec and same_meta:
                return copy.deepcopy(cur)
            if kind == "Deployment" and cur["spec"]["selector"] != new["spec"]["selector"]:
                raise DeploymentError(f"Deployment {meta['name']}: spec.selector is immutable")
            new["metadata"]["generation"] = cur["metadata"]["generation"] + (0 if same_spec else 1)
            new["status"] = cur.get("status", {})
        self.writes += 1
        self.objects[key] = new
        self._reconcile(kind, meta["namespace"], meta["name"])
        return copy.deepcopy(new)

    def patch_status(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.log.append(("patch_status", kind, name, json.dumps(patch, sort_keys=True)))
        obj = self.objects[(kind, namespace, name)]
        status = obj.setdefault("status", {})
        for k, v in patch.items():
            if v is None:
                status.pop(k, None)
            else:
                status[k] = v
        self._reconcile(kind, namespace, name)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.log.append(("delete", kind, name))
        self._sim.pop((kind, namespace, name), None)
        return self.objects.pop((kind, namespace, name), None) is not None

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[PodState]:
        self.log.append(("list_pods", json.dumps(selector, sort_keys=True)))
        return [p for p in self._pods(namespace) if _matches(p.labels, selector)]

    def has_crd(self, name: str) -> bool:
        self.log.append(("has_crd", name))
        return name in self.crds

    # -- helpers for tests

    def endpoints(self, namespace: str, service: str) -> list[PodState]:
        """Ready pods the Service routes to."""
        svc = self.objects.get(("Service", namespace, service))
        if svc is None:
            return []
        sel = svc["spec"]["selector"]
        return [p for p in self._pods(namespace) if p.ready and _matches(p.labels, sel)]

    def traffic(self, namespace: str, service: str) -> dict[str, float]:
        """Share of the Service's connections per role (even spread over ready endpoints)."""
        eps = self.endpoints(namespace, service)
        out: dict[str, float] = {}
        for p in eps:
            out[p.labels.get(ROLE, "?")] = out.get(p.labels.get(ROLE, "?"), 0.0) + 1.0 / len(eps)
        return out

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, _, name) in self.objects if k == kind)

    # -- the simulated controllers

    def _reconcile(self, kind: str, namespace: str, name: str) -> None:
        obj, sim = self.objects[(kind, namespace, name)], self._sim[(kind, namespace, name)]
        if kind == "Deployment":
            self._reconcile_deployment(obj, sim)
        elif kind == "Rollout":
            self._reconcile_rollout(obj, sim)

    def _reconcile_deployment(self, obj: dict[str, Any], sim: _Sim) -> None:
        spec, name = obj["spec"], obj["metadata"]["name"]
        want, template = spec["replicas"], spec["template"]
        if name not in self.not_ready:
            sim.ready_template, sim.ready_replicas = copy.deepcopy(template), want
            ready, total = want, want
        elif sim.ready_template == template:  # scaling up, the new pods never get ready
            ready, total = min(sim.ready_replicas, want), want
        else:  # a rollout stuck on new pods; the old ones keep serving
            ready, total = sim.ready_replicas, sim.ready_replicas + want
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": total,
            "updatedReplicas": want,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if name in self.not_ready:
            obj["status"]["conditions"] = [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                 "message": f'ReplicaSet "{name}-{_hash(template)}" is progressing.'},
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability."},
            ]  # fmt: skip

    def _reconcile_rollout(self, obj: dict[str, Any], sim: _Sim) -> None:
        spec, status, name = obj["spec"], obj.setdefault("status", {}), obj["metadata"]["name"]
        template, canary = spec["template"], spec["strategy"]["canary"]
        steps = canary.get("steps") or []
        if sim.stable_template is None:
            sim.stable_template = copy.deepcopy(template)
        paused_at = next((i for i, step in enumerate(steps) if "pause" in step), None)
        promote = status.pop("promoteFull", False) or paused_at is None
        healthy = name not in self.not_ready
        if template != sim.stable_template and promote and healthy:
            sim.stable_template = copy.deepcopy(template)
        in_canary = template != sim.stable_template
        status.update(
            {
                "observedGeneration": str(obj["metadata"]["generation"]),
                "stableRS": _hash(sim.stable_template),
                "currentPodHash": _hash(template),
                "phase": ("Paused" if healthy else "Progressing") if in_canary else "Healthy",
                "currentStepIndex": (paused_at if in_canary and paused_at is not None else len(steps)),
            }
        )
        if not in_canary:
            status.pop("pauseConditions", None)

    def _pods(self, namespace: str) -> list[PodState]:
        pods: list[PodState] = []
        for (kind, ns, name), obj in sorted(self.objects.items()):
            if ns != namespace or kind not in ("Deployment", "Rollout"):
                continue
            self._reconcile(kind, ns, name)
            sim, spec = self._sim[(kind, ns, name)], obj["spec"]
            broken = self.not_ready.get(name)
            if kind == "Deployment":
                cur = spec["template"]
                if broken is None or sim.ready_template == cur:
                    ready_n = (
                        spec["replicas"] if broken is None else min(sim.ready_replicas, spec["replicas"])
                    )
                    pods += self._make(name, cur, {}, ready_n, True)
                    pods += self._make(
                        name, cur, {}, spec["replicas"] - ready_n, False, broken, start=ready_n
                    )
                else:
                    if sim.ready_template is not None:
                        pods += self._make(name, sim.ready_template, {}, sim.ready_replicas, True)
                    pods += self._make(name, cur, {}, spec["replicas"], False, broken)
            else:
                canary = spec["strategy"]["canary"]
                stable_meta = (canary.get("stableMetadata") or {}).get("labels") or {}
                canary_meta = (canary.get("canaryMetadata") or {}).get("labels") or {}
                total = spec["replicas"]
                if spec["template"] == sim.stable_template:
                    pods += self._make(name, spec["template"], stable_meta, total, True)
                    continue
                weight = 100
                for step in canary.get("steps") or []:
                    if "setWeight" in step:
                        weight = step["setWeight"]
                    if "pause" in step:
                        break
                n_canary = m.replicas_for(weight, total)
                pods += self._make(name, sim.stable_template or {}, stable_meta, total - n_canary, True)
                pods += self._make(name, spec["template"], canary_meta, n_canary, broken is None, broken)
        return pods

    @staticmethod
    def _make(
        owner: str,
        template: dict[str, Any],
        extra: dict[str, str],
        n: int,
        ready: bool,
        reason: str | None = None,
        start: int = 0,
    ) -> list[PodState]:
        h = _hash(template)
        labels = {**(template.get("metadata") or {}).get("labels", {}), **extra, "pod-template-hash": h}
        reasons = () if ready else (f"container {m.CONTAINER}: {reason or 'ContainerCreating'}",)
        return [
            PodState(f"{owner}-{h}-{i:05d}", dict(labels), ready, "Running" if ready else "Pending", reasons)
            for i in range(start, start + max(0, n))
        ]


# ------------------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class _Role:
    """A plain Deployment of one role, as the target renders it."""

    role: str
    version: str
    image: str
    replicas: int
    serving: bool

    @classmethod
    def of(cls, role: str, d: dict[str, Any]) -> _Role:
        ann = d["metadata"].get("annotations") or {}
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        return cls(
            role,
            ann[m.ANN_VERSION],
            ann[m.ANN_IMAGE],
            int(d["spec"]["replicas"]),
            labels.get(SERVING) == "true",
        )


@dataclass(frozen=True)
class _Rollout:
    """The Argo Rollout's view: who owns its stable ReplicaSet, and the routed candidate (if any)."""

    owner: str
    stable_version: str
    stable_image: str
    candidate: str | None
    version: str
    image: str
    raw: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @classmethod
    def of(cls, r: dict[str, Any]) -> _Rollout:
        ann = r["metadata"].get("annotations") or {}
        spec = r["spec"]
        canary = spec["strategy"]["canary"]
        return cls(
            owner=canary["stableMetadata"]["labels"][ROLE],
            stable_version=ann[m.ANN_STABLE_VERSION],
            stable_image=ann[m.ANN_STABLE_IMAGE],
            candidate=ann.get(m.ANN_CANDIDATE) or None,
            version=spec["template"]["metadata"]["labels"][VERSION],
            image=spec["template"]["spec"]["containers"][0]["image"],
            raw=r,
        )


class KubernetesTarget:
    """:class:`~mlops.deploy.target.DeploymentTarget` on a Kubernetes cluster (see the module doc)."""

    kind = "kubernetes"

    def __init__(
        self,
        model_name: str,
        config: KubernetesTargetConfig | None = None,
        api: KubeApi | None = None,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.model = model_name
        self.name = m.k8s_name(model_name)
        self.cfg = config or KubernetesTargetConfig()
        self.ns = self.cfg.namespace
        self._api = api
        self._http = http
        self._clock = clock
        self._sleep = sleep
        self._mode: str | None = None

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            self._api = ClientKubeApi()
        return self._api

    # ------------------------------------------------------------------------- reading state

    def mode(self) -> str:
        """``deployments`` or ``argo-rollouts``: as recorded on the Service, else chosen by config."""
        if self._mode is not None:
            return self._mode
        svc = self._main_service()
        recorded = ((svc or {}).get("metadata", {}).get("annotations") or {}).get(m.ANN_MODE)
        want = self.cfg.argo_rollouts
        if recorded:
            if (want == "always" and recorded != MODE_ARGO) or (want == "never" and recorded == MODE_ARGO):
                raise DeploymentError(
                    f"{self.model} runs in {recorded} mode on {self.ns} (Service {self._svc_name()}) but "
                    f"argo_rollouts is {want!r}: remove the model's objects first to switch modes"
                )
            mode = recorded
        elif want == "never":
            mode = MODE_DEPLOYMENTS
        else:
            has = self.api.has_crd(m.ROLLOUTS_CRD)
            if want == "always" and not has:
                raise DeploymentError(
                    f"argo_rollouts is 'always' but the cluster has no {m.ROLLOUTS_CRD} CRD: install Argo "
                    "Rollouts or set argo_rollouts to 'auto' or 'never'"
                )
            mode = MODE_ARGO if has else MODE_DEPLOYMENTS
        self._mode = mode
        return mode

    def _svc_name(self) -> str:
        return m.service_name(self.model, self.cfg)

    def _main_service(self) -> dict[str, Any] | None:
        return self.api.get("Service", self.ns, self._svc_name())

    def _roles(self) -> dict[str, _Role]:
        out = {}
        for role in ROLES:
            d = self.api.get("Deployment", self.ns, m.role_name(self.model, role))
            if d is not None:
                out[role] = _Role.of(role, d)
        return out

    def _rollout(self) -> _Rollout | None:
        r = self.api.get("Rollout", self.ns, self.name)
        return _Rollout.of(r) if r is not None else None

    def _url(self, role: str) -> str:
        host = f"{m.role_name(self.model, role)}.{self.ns}.svc.{self.cfg.cluster_domain}"
        return f"http://{host}:{self.cfg.service_port}"

    def endpoint(self) -> str:
        if self.cfg.endpoint_url:
            return self.cfg.endpoint_url
        return f"http://{self._svc_name()}.{self.ns}.svc.{self.cfg.cluster_domain}:{self.cfg.service_port}"

    def weights(self) -> dict[str, int]:
        svc = self._main_service()
        if svc is None:
            return {}
        raw = (svc["metadata"].get("annotations") or {}).get(m.ANN_WEIGHTS) or "{}"
        try:
            return {str(r): int(w) for r, w in json.loads(raw).items()}
        except (ValueError, AttributeError) as exc:
            raise DeploymentError(
                f"Service {self.ns}/{self._svc_name()}: bad {m.ANN_WEIGHTS} {raw!r}"
            ) from exc

    def backends(self) -> dict[str, Backend]:
        out = {r: Backend(r, s.version, self._url(r), s.image) for r, s in self._roles().items()}
        if self.mode() == MODE_ARGO and (ro := self._rollout()) is not None:
            out[ro.owner] = Backend(ro.owner, ro.stable_version, self._url(ro.owner), ro.stable_image)
            if ro.candidate:
                out[ro.candidate] = Backend(ro.candidate, ro.version, self._url(ro.candidate), ro.image)
        return out

    # ------------------------------------------------------------------------- writing

    def _apply_role(self, s: _Role) -> None:
        self.api.apply(m.deployment(self.model, s.role, s.version, s.image, s.replicas, s.serving, self.cfg))

    def _apply_main_service(self, weights: dict[str, int]) -> None:
        self.api.apply(m.main_service(self.model, weights, self.mode(), self.cfg))

    def deploy(self, role: str, version: str, image: str | None = None) -> Backend:
        m.check_role(role)
        version = m.check_version(version)
        image = m.check_image(image)
        mode = self.mode()
        current = self.weights()
        if current.get(role, 0) > 0:
            raise DeploymentError(
                f"{self.model} {role} takes {current[role]}% of the traffic; move its traffic elsewhere "
                "(set_weights) before replacing it"
            )
        if mode == MODE_ARGO and (ro := self._rollout()) is not None and role in (ro.owner, ro.candidate):
            raise DeploymentError(
                f"{self.model} {role} runs in the Rollout {self.ns}/{self.name}; promote or remove it first"
            )
        if self._main_service() is None:
            self._apply_main_service({})
        self.api.apply(m.role_service(self.model, role, self.cfg))
        self._apply_role(_Role(role, version, image, m.standby_for(role, self.cfg), serving=False))
        self._wait_roles([role])
        return Backend(role, version, self._url(role), image)

    def set_weights(self, weights: dict[str, int]) -> None:
        weights = m.check_weights(weights)
        if self.mode() == MODE_ARGO:
            self._argo_set_weights(weights)
            return
        roles = self._roles()
        missing = sorted(r for r, w in weights.items() if w > 0 and r not in roles)
        if missing:
            raise DeploymentError(f"cannot route traffic to {missing}: not deployed for {self.model}")
        new = {r: weights.get(r, 0) for r in roles}
        split = SERVING in m.main_selector(self.model, new)
        # 1. Routed roles grow first (never shrink before the switch) and, for a split, get serving=true;
        #    unrouted roles lose a serving=true label before a serving=true selector can reach them.
        changed: dict[str, _Role] = {}
        for r, s in roles.items():
            w = new[r]
            if w > 0:
                upd = replace(s, replicas=max(s.replicas, m.replicas_for(w, self.cfg.replicas)))
                upd = replace(upd, serving=True) if split else upd
            else:
                upd = replace(s, serving=False) if split else s
            if upd != s:
                changed[r] = upd
                self._apply_role(upd)
        self._wait_roles(list(changed))
        roles.update(changed)
        # 2. The switch: one Service update.
        self._apply_main_service(new)
        # 3. Exact sizes: routed roles by weight, the others on standby.
        resized = []
        for r, s in roles.items():
            want = m.replicas_for(new[r], self.cfg.replicas) if new[r] > 0 else m.standby_for(r, self.cfg)
            if s.replicas != want:
                self._apply_role(replace(s, replicas=want))
                resized.append(r)
        self._wait_roles(resized)

    def promote(self, role: str, keep_previous: bool = False) -> None:
        m.check_role(role)
        if self.mode() == MODE_ARGO:
            self._argo_promote(role, keep_previous)
            return
        roles = self._roles()
        if role not in roles:
            raise DeploymentError(f"cannot promote {role}: not deployed for {self.model}")
        if role == STABLE:
            self.set_weights({STABLE: 100})
            return
        cand, old = roles[role], roles.get(STABLE)
        kept = keep_previous and old is not None
        # All traffic to the candidate first: stable's pods are then replaced while nobody calls them.
        self.set_weights({role: 100})
        if kept and role != PREVIOUS:
            self._keep_as_previous(old)
        self.api.apply(m.role_service(self.model, STABLE, self.cfg))
        self._apply_role(replace(cand, role=STABLE, replicas=self.cfg.replicas, serving=True))
        self._wait_roles([STABLE])
        self.set_weights({STABLE: 100})
        if kept and role == PREVIOUS:  # a rollback promotion: the two versions swap places
            self._keep_as_previous(old)
        else:
            self.remove(role)

    def _keep_as_previous(self, old: _Role | None) -> None:
        assert old is not None
        self.api.apply(m.role_service(self.model, PREVIOUS, self.cfg))
        self._apply_role(
            replace(old, role=PREVIOUS, replicas=m.standby_for(PREVIOUS, self.cfg), serving=False)
        )
        self._wait_roles([PREVIOUS])

    def remove(self, role: str) -> None:
        m.check_role(role)
        w = self.weights().get(role, 0)
        if w > 0:
            raise DeploymentError(f"cannot remove {self.model} {role}: it takes {w}% of the traffic")
        if self.mode() == MODE_ARGO and (ro := self._rollout()) is not None:
            if role == ro.owner:
                raise DeploymentError(
                    f"cannot remove {self.model} {role}: it is the stable of Rollout {self.ns}/{self.name}"
                )
            if role == ro.candidate:  # at weight 0: back to the stable template (Argo scales the canary down)
                self._apply_rollout(ro, candidate=None, steps=[])
        self.api.delete("Deployment", self.ns, m.role_name(self.model, role))
        self.api.delete("Service", self.ns, m.role_name(self.model, role))

    # ------------------------------------------------------------------------- Argo Rollouts

    def _apply_rollout(
        self,
        ro: _Rollout | None,
        *,
        candidate: str | None,
        steps: list[dict[str, Any]],
        spec: tuple[str, str] | None = None,
        owner: str | None = None,
        stable: tuple[str, str] | None = None,
    ) -> None:
        """Render and apply the Rollout; ``spec`` (version, image) is the template (default: stable's)."""
        owner = owner or (ro.owner if ro else STABLE)
        stable_v, stable_i = stable or ((ro.stable_version, ro.stable_image) if ro else spec or ("", ""))
        version, image = spec or (stable_v, stable_i)
        self.api.apply(
            m.rollout(
                self.model,
                version=version,
                image=image,
                stable_role=owner,
                stable_version=stable_v,
                stable_image=stable_i,
                candidate=candidate,
                steps=steps,
                cfg=self.cfg,
            )
        )
        # Steps changed or a new template: let the controller run them from step 0 (clears a held pause).
        self.api.patch_status(
            "Rollout", self.ns, self.name, {"pauseConditions": None, "controllerPause": False}
        )

    def _argo_set_weights(self, weights: dict[str, int]) -> None:
        roles, ro = self._roles(), self._rollout()
        routed = {r: w for r, w in weights.items() if w > 0}
        in_rollout = {ro.owner, ro.candidate} - {None} if ro else set()
        missing = sorted(r for r in routed if r not in roles and r not in in_rollout)
        if missing:
            raise DeploymentError(f"cannot route traffic to {missing}: not deployed for {self.model}")
        if ro is None:
            if len(routed) == 1:
                (r,) = routed
                s = roles[r]
                self._apply_rollout(None, candidate=None, steps=[], spec=(s.version, s.image), owner=r)
                self._wait_rollout(r, s.version, self.cfg.replicas, promoted=True)
                self.api.delete("Deployment", self.ns, m.role_name(self.model, r))  # the Rollout runs it now
                self._apply_main_service(weights)
                return
            if STABLE not in routed:
                raise DeploymentError(f"a first split needs a deployed stable; weights {weights}")
            self._argo_set_weights({STABLE: 100})
            ro = self._rollout()
            assert ro is not None
        others = [r for r in routed if r != ro.owner]
        if len(others) > 1:
            raise DeploymentError(
                f"with Argo Rollouts traffic is split between {ro.owner} and one candidate, not {sorted(routed)}"
            )
        if not others:  # all traffic back to the owner of the stable ReplicaSet
            if ro.candidate is not None or ro.version != ro.stable_version or ro.image != ro.stable_image:
                self._apply_rollout(ro, candidate=None, steps=[])
                self._wait_rollout(ro.owner, ro.stable_version, self.cfg.replicas, promoted=True)
            self._apply_main_service(weights)
            return
        (r,) = others
        if r in roles:
            spec = (roles[r].version, roles[r].image)
        elif r == ro.candidate:
            spec = (ro.version, ro.image)
        else:  # pragma: no cover - excluded by `missing`
            raise DeploymentError(f"{r} is not deployed")
        w = routed[r]
        self._apply_rollout(ro, candidate=r, steps=[{"setWeight": w}, {"pause": {}}], spec=spec)
        self._wait_rollout(r, spec[0], 1, promoted=False)
        if r in roles:
            self.api.delete("Deployment", self.ns, m.role_name(self.model, r))  # handed over to the Rollout
        self._apply_main_service(weights)

    def _argo_promote(self, role: str, keep_previous: bool) -> None:
        ro = self._rollout()
        if ro is None or role not in (ro.owner, ro.candidate):
            self.set_weights({role: 100})
            ro = self._rollout()
            assert ro is not None
        if role == ro.owner:
            if role != STABLE:  # the first deployment: its pods become `stable` (labels only, no restart)
                self._apply_rollout(ro, candidate=None, steps=[], owner=STABLE)
                self._wait_rollout(STABLE, ro.stable_version, self.cfg.replicas, promoted=True)
                self._apply_main_service({STABLE: 100})
                self.remove(role)
            else:
                self.set_weights({STABLE: 100})
            return
        self.set_weights({role: 100})
        ro = self._rollout()
        assert ro is not None
        if keep_previous:
            old = _Role(PREVIOUS, ro.stable_version, ro.stable_image, 0, serving=False)
            self._keep_as_previous(old)
        self._apply_rollout(
            ro, candidate=None, steps=[{"setWeight": 100}], spec=(ro.version, ro.image), owner=STABLE,
            stable=(ro.version, ro.image),
        )  # fmt: skip
        self.api.patch_status("Rollout", self.ns, self.name, {"promoteFull": True})
        self._wait_rollout(STABLE, ro.version, self.cfg.replicas, promoted=True)
        self._apply_main_service({STABLE: 100})
        if not (keep_previous and role == PREVIOUS):
            self.api.delete("Deployment", self.ns, m.role_name(self.model, role))
            self.api.delete("Service", self.ns, m.role_name(self.model, role))

    # ------------------------------------------------------------------------- waiting

    def _deadline(self) -> float:
        return self._clock() + self.cfg.readiness_timeout_s

    def _wait_roles(self, roles: list[str]) -> None:
        """Until every Deployment of ``roles`` has all its replicas updated and ready, old pods gone."""
        deadline = self._deadline()
        for role in roles:
            name = m.role_name(self.model, role)
            while True:
                d = self.api.get("Deployment", self.ns, name)
                if d is None:
                    raise DeploymentError(f"Deployment {self.ns}/{name} disappeared while waiting for it")
                if _deployment_ready(d):
                    break
                if self._clock() >= deadline:
                    raise DeploymentError(self._not_ready(role, d))
                self._sleep(self.cfg.poll_interval_s)

    def _wait_rollout(self, role: str, version: str, count: int, *, promoted: bool) -> None:
        """Until ``count`` pods of ``role``/``version`` in the Rollout are ready (and it is promoted)."""
        deadline = self._deadline()
        sel = {APP: self.name, SERVING: "true", ROLE: role, VERSION: version}
        while True:
            r = self.api.get("Rollout", self.ns, self.name) or {}
            st, gen = r.get("status") or {}, (r.get("metadata") or {}).get("generation")
            seen = st.get("observedGeneration") in (None, str(gen), gen)
            pods = self.api.list_pods(self.ns, sel)
            ready = sum(p.ready for p in pods)
            if promoted:
                phase_ok = st.get("stableRS") is not None and st.get("stableRS") == st.get("currentPodHash")
            else:
                phase_ok = st.get("phase") == "Paused"
            if st.get("phase") == "Degraded":
                raise DeploymentError(
                    f"Rollout {self.ns}/{self.name} is Degraded: {st.get('message', '')}; "
                    + _pod_report(pods)
                )
            if seen and phase_ok and ready >= count:
                return
            if self._clock() >= deadline:
                raise DeploymentError(
                    f"{self.model} {role} v{version}: Rollout {self.ns}/{self.name} not ready after "
                    f"{self.cfg.readiness_timeout_s:.0f}s (phase {st.get('phase')!r}, {ready}/{count} pods "
                    f"ready); {_pod_report(pods)}"
                )
            self._sleep(self.cfg.poll_interval_s)

    def _not_ready(self, role: str, d: dict[str, Any]) -> str:
        name, st = d["metadata"]["name"], d.get("status") or {}
        ann = d["metadata"].get("annotations") or {}
        want = d["spec"]["replicas"]
        pods = self.api.list_pods(self.ns, {APP: self.name, ROLE: role})
        conds = [
            f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
            for c in st.get("conditions") or []
            if c.get("status") != "True" or c.get("reason") == "ProgressDeadlineExceeded"
        ]
        return (
            f"{self.model} {role} v{ann.get(m.ANN_VERSION, '?')}: Deployment {self.ns}/{name} not ready after "
            f"{self.cfg.readiness_timeout_s:.0f}s: {st.get('readyReplicas', 0)}/{want} pods ready, "
            f"{st.get('updatedReplicas', 0)} updated, {st.get('replicas', 0)} in total"
            + (f"; conditions: {'; '.join(conds)}" if conds else "")
            + f"; {_pod_report(pods)}. Its new pods take no traffic; "
            f"see `kubectl -n {self.ns} describe deployment {name}`"
        )

    # ------------------------------------------------------------------------- metrics

    def snapshot(self, role: str) -> MetricsSnapshot:
        """Cumulative metrics of the pods of ``role`` summed by Prometheus (instant queries).

        Series are selected by the server's own labels (``model_version``; ``variant`` = role, except
        with Argo Rollouts where a promoted pod keeps the variant it started with) and, when the scrape
        config provides them, by namespace and pod name. As fresh as the last scrape.
        """
        m.check_role(role)
        b = self.backends().get(role)
        if b is None:
            raise DeploymentError(f"no {role} backend deployed for {self.model}")
        sel = self._series_selector(role, b.version)
        routes = "|".join(SCORING_ROUTES)
        http_sel = f'{sel},route=~"{routes}"'
        requests, t = self._scalar(f"sum(mlops_http_requests_total{{{http_sel}}})")
        errors, _ = self._scalar(f'sum(mlops_http_requests_total{{{http_sel},status=~"5.."}})')
        latency, _ = self._buckets(f"sum by (le) (mlops_http_request_duration_seconds_bucket{{{http_sel}}})")
        scores, _ = self._buckets(f"sum by (le) (mlops_prediction_score_bucket{{{sel}}})")
        return MetricsSnapshot(
            requests=requests,
            errors=errors,
            latency_buckets=latency,
            score_buckets=scores,
            taken_at=t if t is not None else time.time(),
        )

    def _series_selector(self, role: str, version: str) -> str:
        parts = []
        if self.cfg.prometheus_namespace_label:
            parts.append(f'{self.cfg.prometheus_namespace_label}="{self.ns}"')
        if self.cfg.prometheus_pod_label:
            # Deployment pods: <deployment>-<pod-template-hash>-<suffix>; Rollout pods: <rollout>-<hash>-<suffix>.
            own = f"{m.role_name(self.model, role)}-[a-z0-9]+-[a-z0-9]+"
            pods = f"{own}|{self.name}-[a-z0-9]+-[a-z0-9]+" if self.mode() == MODE_ARGO else own
            parts.append(f'{self.cfg.prometheus_pod_label}=~"{pods}"')
        if self.mode() != MODE_ARGO:
            parts.append(f'variant="{role}"')
        parts.append(f'model_version="{version}"')
        return ",".join(parts)

    def _query(self, promql: str) -> tuple[list[dict[str, Any]], float | None]:
        import httpx

        if not self.cfg.prometheus_url:
            raise DeploymentError(
                f"{self.model}: no prometheus_url in the kubernetes target settings; the analysis needs "
                "Prometheus scraping the model pods"
            )
        url = self.cfg.prometheus_url.rstrip("/") + "/api/v1/query"
        client = self._http or httpx.Client(timeout=self.cfg.prometheus_timeout_s)
        try:
            resp = client.get(url, params={"query": promql})
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DeploymentError(f"Prometheus at {url} did not answer {promql!r}: {exc}") from exc
        finally:
            if self._http is None:
                client.close()
        if resp.status_code != 200 or body.get("status") != "success":
            raise DeploymentError(
                f"Prometheus query {promql!r} failed ({resp.status_code}): "
                f"{body.get('errorType', '')} {body.get('error', '')}".rstrip()
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise DeploymentError(
                f"Prometheus query {promql!r}: expected a vector, got {data.get('resultType')}"
            )
        result = data.get("result") or []
        t = float(result[0]["value"][0]) if result else None
        return result, t

    def _scalar(self, promql: str) -> tuple[float, float | None]:
        result, t = self._query(promql)
        return sum(_num(s["value"][1]) for s in result), t

    def _buckets(self, promql: str) -> tuple[dict[float, float], float | None]:
        result, t = self._query(promql)
        out: dict[float, float] = {}
        for s in result:
            le = float(s["metric"]["le"])  # "+Inf" parses to inf
            out[le] = out.get(le, 0.0) + _num(s["value"][1])
        return dict(sorted(out.items())), t


def _num(v: Any) -> float:
    x = float(v)
    return 0.0 if math.isnan(x) else x


def _deployment_ready(d: dict[str, Any]) -> bool:
    st, want = d.get("status") or {}, int(d["spec"].get("replicas", 1))
    return (
        st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
        and st.get("updatedReplicas", 0) == want
        and st.get("readyReplicas", 0) == want
        and st.get("replicas", 0) == want
    )


def _pod_report(pods: list[PodState], limit: int = 5) -> str:
    bad = [p for p in pods if not p.ready]
    if not pods:
        return "no pods (quota, admission or scheduling: see the ReplicaSet's events)"
    if not bad:
        return f"{len(pods)} pods, all ready"
    lines = [f"{p.name} ({p.phase}): {', '.join(p.reasons) or 'not ready'}" for p in bad[:limit]]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"pods not ready: {'; '.join(lines)}{more}"
