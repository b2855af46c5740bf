"""The ``kubernetes`` deployment target: model servers as Deployments behind one Service.

Traffic is split by replica counts: a role at weight ``w`` % runs ``round(replicas * w / 100)`` pods
(at least 1 when ``w`` > 0) and the user-facing Service spreads connections over the ready pods of
the routed roles. Who is routed is decided by the Service's selector
(:func:`~mlops.deploy.kubernetes.manifests.main_selector`):

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
``always``): a ``Rollout`` named after the model runs stable and the routed candidate
(:mod:`mlops.deploy.kubernetes.argo`). The mode is recorded on the Service when first created, so
installing Argo later does not switch a running model. The Rollout path is checked structurally only
(no Rollout schema offline, no controller here): see the tests.

All API calls go through :class:`~mlops.deploy.kubernetes.api.KubeApi`
(:class:`~mlops.deploy.kubernetes.api.ClientKubeApi` on the official client; an in-memory cluster in
the tests); metrics come from Prometheus through :class:`~mlops.deploy.prometheus.PrometheusClient`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mlops.deploy.kubernetes import argo
from mlops.deploy.kubernetes import manifests as m
from mlops.deploy.kubernetes.api import ClientKubeApi, KubeApi, pod_report
from mlops.deploy.kubernetes.manifests import (
    APP,
    MODE_ARGO,
    MODE_DEPLOYMENTS,
    ROLE,
    SERVING,
    KubernetesTargetConfig,
)
from mlops.deploy.prometheus import PrometheusClient, PrometheusError
from mlops.deploy.target import (
    PREVIOUS,
    ROLES,
    SCORING_ROUTES,
    STABLE,
    Backend,
    DeploymentError,
    MetricsSnapshot,
)
from mlops.serving.metrics import HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS, PREDICTION_SCORE

if TYPE_CHECKING:
    import httpx

__all__ = ["KubernetesTarget", "KubernetesTargetConfig"]


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
        """The Kubernetes API: the one given, else a client of the configured cluster (made on first use)."""
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

    def _rollout(self) -> argo.RolloutState | None:
        return argo.current(self)

    def _url(self, role: str) -> str:
        host = f"{m.role_name(self.model, role)}.{self.ns}.svc.{self.cfg.cluster_domain}"
        return f"http://{host}:{self.cfg.service_port}"

    def endpoint(self) -> str:
        """The main Service's in-cluster URL, unless ``endpoint_url`` is configured."""
        if self.cfg.endpoint_url:
            return self.cfg.endpoint_url
        return f"http://{self._svc_name()}.{self.ns}.svc.{self.cfg.cluster_domain}:{self.cfg.service_port}"

    def weights(self) -> dict[str, int]:
        """Traffic weight (percent) per role, from the main Service's annotation; empty before any deploy."""
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
        """Backends by role: the role Deployments, and the stable and candidate of an Argo Rollout."""
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
        """Start ``version`` in ``role`` at weight 0 and return once its pods are ready."""
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
        """Split traffic between deployed roles: integers >= 0 summing to 100."""
        weights = m.check_weights(weights)
        if self.mode() == MODE_ARGO:
            argo.set_weights(self, weights)
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
        """Make ``role`` the stable backend at 100 %; the former stable is kept as ``previous`` or removed."""
        m.check_role(role)
        if self.mode() == MODE_ARGO:
            argo.promote(self, role, keep_previous)
            return
        roles = self._roles()
        if role not in roles:
            raise DeploymentError(f"cannot promote {role}: not deployed for {self.model}")
        if role == STABLE:
            self.set_weights({STABLE: 100})
            return
        cand, old = roles[role], roles.get(STABLE)
        # All traffic to the candidate first: stable's pods are then replaced while nobody calls them.
        self.set_weights({role: 100})
        if keep_previous and old is not None and role != PREVIOUS:
            self._keep_as_previous(old.version, old.image)
        self.api.apply(m.role_service(self.model, STABLE, self.cfg))
        self._apply_role(replace(cand, role=STABLE, replicas=self.cfg.replicas, serving=True))
        self._wait_roles([STABLE])
        self.set_weights({STABLE: 100})
        if keep_previous and old is not None and role == PREVIOUS:  # a rollback: the versions swap places
            self._keep_as_previous(old.version, old.image)
        else:
            self.remove(role)

    def _keep_as_previous(self, version: str, image: str) -> None:
        """``version``/``image`` as the warm ``previous`` role (one-step rollback), routed nowhere."""
        self.api.apply(m.role_service(self.model, PREVIOUS, self.cfg))
        self._apply_role(_Role(PREVIOUS, version, image, m.standby_for(PREVIOUS, self.cfg), serving=False))
        self._wait_roles([PREVIOUS])

    def remove(self, role: str) -> None:
        """Delete the Deployment and Service of ``role`` (it must take no traffic)."""
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
                argo.apply_rollout(self, ro, candidate=None, steps=[])
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
            + f"; {pod_report(pods)}. Its new pods take no traffic; "
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
        requests, t = self._scalar(f"sum({HTTP_REQUESTS}_total{{{http_sel}}})")
        errors, _ = self._scalar(f'sum({HTTP_REQUESTS}_total{{{http_sel},status=~"5.."}})')
        latency, _ = self._bucket_series(
            f"sum by (le) ({HTTP_REQUEST_DURATION_SECONDS}_bucket{{{http_sel}}})"
        )
        scores, _ = self._bucket_series(f"sum by (le) ({PREDICTION_SCORE}_bucket{{{sel}}})")
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

    def _prometheus(self) -> PrometheusClient:
        if not self.cfg.prometheus_url:
            raise DeploymentError(
                f"{self.model}: no prometheus_url in the kubernetes target settings; the analysis needs "
                "Prometheus scraping the model pods"
            )
        return PrometheusClient(
            self.cfg.prometheus_url, timeout=self.cfg.prometheus_timeout_s, http=self._http
        )

    def _query(self, promql: str) -> tuple[list[dict[str, Any]], float | None]:
        """The result vector of ``promql`` and its evaluation time (None when the vector is empty)."""
        try:
            result = self._prometheus().query(promql)
        except PrometheusError as exc:
            raise DeploymentError(str(exc)) from exc
        t = float(result[0]["value"][0]) if result else None
        return result, t

    def _scalar(self, promql: str) -> tuple[float, float | None]:
        result, t = self._query(promql)
        return sum(_num(s["value"][1]) for s in result), t

    def _bucket_series(self, promql: str) -> tuple[dict[float, float], float | None]:
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
