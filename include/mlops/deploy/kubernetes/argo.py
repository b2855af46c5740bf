"""The Argo Rollouts path of the kubernetes target (``mode() == "argo-rollouts"``).

One ``Rollout`` named after the model (canary strategy without a traffic router: Argo splits by replica
counts) runs stable and the routed candidate. Weights are the Rollout's ``steps``, rewritten on every
change (``[{setWeight: w}, {pause: {}}]``; Argo restarts the steps when they change, and the pause is
cleared so the new ``setWeight`` runs); promotion is ``promoteFull``. A staged candidate stays a plain
Deployment with ``serving=false`` until it is routed (Argo's basic canary cannot run canary pods at
weight 0: ``setCanaryScale`` needs a traffic router).

Functions of the :class:`~mlops.deploy.kubernetes.target.KubernetesTarget` they are given: they use its
API client, settings and role helpers (same package), and it calls them when it runs in this mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.deploy.kubernetes import manifests as m
from mlops.deploy.kubernetes.api import pod_report
from mlops.deploy.kubernetes.manifests import APP, ROLE, SERVING, VERSION
from mlops.deploy.target import PREVIOUS, STABLE, DeploymentError

if TYPE_CHECKING:
    from mlops.deploy.kubernetes.target import KubernetesTarget

__all__ = ["RolloutState", "apply_rollout", "current", "promote", "set_weights", "wait_rollout"]


@dataclass(frozen=True)
class RolloutState:
    """The Argo Rollout's view: who owns its stable ReplicaSet, and the routed candidate (if any)."""

    owner: str
    stable_version: str
    stable_image: str
    candidate: str | None
    version: str
    image: str
    raw: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @classmethod
    def of(cls, r: dict[str, Any]) -> RolloutState:
        """The state read from a Rollout object (API JSON)."""
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


def current(t: KubernetesTarget) -> RolloutState | None:
    """The model's Rollout as it is in the cluster, None if there is none."""
    r = t.api.get("Rollout", t.ns, t.name)
    return RolloutState.of(r) if r is not None else None


def apply_rollout(
    t: KubernetesTarget,
    ro: RolloutState | None,
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
    t.api.apply(
        m.rollout(
            t.model,
            version=version,
            image=image,
            stable_role=owner,
            stable_version=stable_v,
            stable_image=stable_i,
            candidate=candidate,
            steps=steps,
            cfg=t.cfg,
        )
    )
    # Steps changed or a new template: let the controller run them from step 0 (clears a held pause).
    t.api.patch_status("Rollout", t.ns, t.name, {"pauseConditions": None, "controllerPause": False})


def set_weights(t: KubernetesTarget, weights: dict[str, int]) -> None:
    """Route ``weights`` (checked) through the Rollout: a first routed role creates it."""
    roles, ro = t._roles(), current(t)
    routed = {r: w for r, w in weights.items() if w > 0}
    in_rollout = {ro.owner, ro.candidate} - {None} if ro else set()
    missing = sorted(r for r in routed if r not in roles and r not in in_rollout)
    if missing:
        raise DeploymentError(f"cannot route traffic to {missing}: not deployed for {t.model}")
    if ro is None:
        if len(routed) == 1:
            (r,) = routed
            s = roles[r]
            apply_rollout(t, None, candidate=None, steps=[], spec=(s.version, s.image), owner=r)
            wait_rollout(t, r, s.version, t.cfg.replicas, promoted=True)
            t.api.delete("Deployment", t.ns, m.role_name(t.model, r))  # the Rollout runs it now
            t._apply_main_service(weights)
            return
        if STABLE not in routed:
            raise DeploymentError(f"a first split needs a deployed stable; weights {weights}")
        set_weights(t, {STABLE: 100})
        ro = current(t)
        assert ro is not None
    others = [r for r in routed if r != ro.owner]
    if len(others) > 1:
        raise DeploymentError(
            f"with Argo Rollouts traffic is split between {ro.owner} and one candidate, not {sorted(routed)}"
        )
    if not others:  # all traffic back to the owner of the stable ReplicaSet
        if ro.candidate is not None or ro.version != ro.stable_version or ro.image != ro.stable_image:
            apply_rollout(t, ro, candidate=None, steps=[])
            wait_rollout(t, ro.owner, ro.stable_version, t.cfg.replicas, promoted=True)
        t._apply_main_service(weights)
        return
    (r,) = others
    if r in roles:
        spec = (roles[r].version, roles[r].image)
    elif r == ro.candidate:
        spec = (ro.version, ro.image)
    else:  # pragma: no cover - excluded by `missing`
        raise DeploymentError(f"{r} is not deployed")
    w = routed[r]
    apply_rollout(t, ro, candidate=r, steps=[{"setWeight": w}, {"pause": {}}], spec=spec)
    wait_rollout(t, r, spec[0], 1, promoted=False)
    if r in roles:
        t.api.delete("Deployment", t.ns, m.role_name(t.model, r))  # handed over to the Rollout
    t._apply_main_service(weights)


def promote(t: KubernetesTarget, role: str, keep_previous: bool) -> None:
    """``role`` becomes ``stable`` at 100 % (``promoteFull``); the old stable kept as ``previous`` if asked."""
    ro = current(t)
    if ro is None or role not in (ro.owner, ro.candidate):
        t.set_weights({role: 100})
        ro = current(t)
        assert ro is not None
    if role == ro.owner:
        if role != STABLE:  # the first deployment: its pods become `stable` (labels only, no restart)
            apply_rollout(t, ro, candidate=None, steps=[], owner=STABLE)
            wait_rollout(t, STABLE, ro.stable_version, t.cfg.replicas, promoted=True)
            t._apply_main_service({STABLE: 100})
            t.remove(role)
        else:
            t.set_weights({STABLE: 100})
        return
    t.set_weights({role: 100})
    ro = current(t)
    assert ro is not None
    if keep_previous:
        t._keep_as_previous(ro.stable_version, ro.stable_image)
    apply_rollout(
        t, ro, candidate=None, steps=[{"setWeight": 100}], spec=(ro.version, ro.image), owner=STABLE,
        stable=(ro.version, ro.image),
    )  # fmt: skip
    t.api.patch_status("Rollout", t.ns, t.name, {"promoteFull": True})
    wait_rollout(t, STABLE, ro.version, t.cfg.replicas, promoted=True)
    t._apply_main_service({STABLE: 100})
    if not (keep_previous and role == PREVIOUS):
        t.api.delete("Deployment", t.ns, m.role_name(t.model, role))
        t.api.delete("Service", t.ns, m.role_name(t.model, role))


def wait_rollout(t: KubernetesTarget, role: str, version: str, count: int, *, promoted: bool) -> None:
    """Until ``count`` pods of ``role``/``version`` in the Rollout are ready (and it is promoted)."""
    deadline = t._deadline()
    sel = {APP: t.name, SERVING: "true", ROLE: role, VERSION: version}
    while True:
        r = t.api.get("Rollout", t.ns, t.name) or {}
        st, gen = r.get("status") or {}, (r.get("metadata") or {}).get("generation")
        seen = st.get("observedGeneration") in (None, str(gen), gen)
        pods = t.api.list_pods(t.ns, sel)
        ready = sum(p.ready for p in pods)
        if promoted:
            phase_ok = st.get("stableRS") is not None and st.get("stableRS") == st.get("currentPodHash")
        else:
            phase_ok = st.get("phase") == "Paused"
        if st.get("phase") == "Degraded":
            raise DeploymentError(
                f"Rollout {t.ns}/{t.name} is Degraded: {st.get('message', '')}; " + pod_report(pods)
            )
        if seen and phase_ok and ready >= count:
            return
        if t._clock() >= deadline:
            raise DeploymentError(
                f"{t.model} {role} v{version}: Rollout {t.ns}/{t.name} not ready after "
                f"{t.cfg.readiness_timeout_s:.0f}s (phase {st.get('phase')!r}, {ready}/{count} pods "
                f"ready); {pod_report(pods)}"
            )
        t._sleep(t.cfg.poll_interval_s)
