"""An in-memory Kubernetes cluster for the kubernetes target's tests (no cluster, no network).

:class:`FakeKubeApi` implements :class:`mlops.deploy.kubernetes.api.KubeApi` with instant, healthy
controllers (see its doc). Test code only: the product never imports it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlops.deploy.kubernetes import manifests as m
from mlops.deploy.kubernetes.api import KINDS, PodState
from mlops.deploy.kubernetes.manifests import ROLE
from mlops.deploy.target import DeploymentError

__all__ = ["FakeKubeApi"]


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
