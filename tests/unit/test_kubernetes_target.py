"""The kubernetes deployment target without a cluster.

The target runs against :class:`FakeKubeApi` (in-memory objects, instant controllers, simulated pod
readiness, every Deployment/Service validated with ``kubernetes-validate`` as it is applied); the
manifests are also validated (strict: unknown fields fail) against several Kubernetes versions.
:class:`ClientKubeApi` is checked at the HTTP layer (the official client's requests, no server).
Argo Rollouts objects are checked structurally only: there is no Rollout schema offline, and no
controller here (the fake imitates its basic-canary behaviour).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import kubernetes_validate
import pytest
from mlops.config.pods import KubernetesTargetConfig
from mlops.deploy.kubernetes import manifests as m
from mlops.deploy.kubernetes.api import ClientKubeApi, KubeApi, pod_state
from mlops.deploy.kubernetes.target import KubernetesTarget
from mlops.deploy.target import DeploymentError, DeploymentTarget
from pydantic import ValidationError

from tests.fakes.kube import FakeKubeApi

K8S_VERSIONS = ["1.30.0", "1.33.0", "1.37.0"]
NS = "mlops"


def img(c: str) -> str:
    return f"registry.example.com/mlops/churn-serving@sha256:{c * 64}"


V1, V2, V3 = ("1", img("a")), ("2", img("b")), ("3", img("c"))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        self.sleeps += 1


def make(argo: bool = False, validate: str = "1.30.0", model: str = "churn", **cfg: Any):
    api = FakeKubeApi(crds=[m.ROLLOUTS_CRD] if argo else [], validate_version=validate)
    clock = Clock()
    config = KubernetesTargetConfig(**{"readiness_timeout_s": 30, "poll_interval_s": 1, **cfg})
    return KubernetesTarget(model, config, api, clock=clock, sleep=clock.sleep), api, clock


def dep(api: FakeKubeApi, role: str, model: str = "churn") -> dict[str, Any] | None:
    return api.objects.get(("Deployment", NS, f"{model}-{role}"))


def replicas(api: FakeKubeApi) -> dict[str, int]:
    return {
        name.removeprefix("churn-"): api.objects[("Deployment", NS, name)]["spec"]["replicas"]
        for name in api.names("Deployment")
    }


def share(api: FakeKubeApi) -> dict[str, float]:
    return {r: round(s, 3) for r, s in api.traffic(NS, "churn").items()}


def versions_served(api: FakeKubeApi) -> set[str]:
    return {p.labels[m.VERSION] for p in api.endpoints(NS, "churn")}


def with_stable(**cfg: Any):
    t, api, clock = make(**cfg)
    t.deploy("stable", *V1)
    t.set_weights({"stable": 100})
    return t, api, clock


# ------------------------------------------------------------------------------------ config


def test_config_defaults_and_strictness():
    c = KubernetesTargetConfig()
    assert (c.replicas, c.container_port, c.argo_rollouts, c.namespace) == (10, 8000, "auto", "mlops")
    with pytest.raises(ValidationError, match="replica"):
        KubernetesTargetConfig(replica=3)  # a typo is an error, not a default
    with pytest.raises(ValidationError, match="quantities"):
        KubernetesTargetConfig(resources={"requests": {"cpu": "half"}})
    with pytest.raises(ValidationError, match="standby_replicas"):
        KubernetesTargetConfig(replicas=2, standby_replicas=3)
    with pytest.raises(ValidationError, match="DNS label"):
        KubernetesTargetConfig(namespace="ML_Prod")
    with pytest.raises(ValidationError):
        KubernetesTargetConfig(argo_rollouts="sometimes")
    with pytest.raises(ValidationError, match="opertor"):
        KubernetesTargetConfig(tolerations=[{"key": "a", "opertor": "Exists"}])
    assert KubernetesTargetConfig.model_validate({"tolerations": [{"key": "a", "operator": "Exists"}]})


def test_the_target_implements_the_interface():
    t, api, _ = make()
    assert isinstance(t, DeploymentTarget) and t.kind == "kubernetes"
    assert isinstance(api, KubeApi)
    assert t.endpoint() == "http://churn.mlops.svc.cluster.local:80"
    assert make(endpoint_url="https://churn.example.com")[0].endpoint() == "https://churn.example.com"


# ------------------------------------------------------------------------------------ manifests


def full_config() -> KubernetesTargetConfig:
    return KubernetesTargetConfig(
        namespace=NS,
        replicas=4,
        service_type="LoadBalancer",
        image_pull_secret="registry-credentials",
        service_account="model-server",
        node_selector={"pool": "serving", "gpu-count": "0"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
        resources={"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        env={"MLOPS_LOG_LEVEL": "debug"},
        workers=2,
        model_uri="models:/{model}/{version}",
        mlflow_secret="mlflow-credentials",
        api_token_secret="endpoint-token",
    )


def all_manifests(cfg: KubernetesTargetConfig) -> list[dict[str, Any]]:
    docs = []
    for role in m.ROLES:
        for serving in (False, True):
            docs.append(m.deployment("credit_risk", role, "12", img("d"), 3, serving, cfg))
        docs.append(m.role_service("credit_risk", role, cfg))
    for weights in ({}, {"stable": 100}, {"stable": 90, "canary": 10}):
        docs.append(m.main_service("credit_risk", weights, m.MODE_DEPLOYMENTS, cfg))
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("cfg", [KubernetesTargetConfig(), full_config()], ids=["defaults", "everything"])
def test_every_manifest_is_valid(version, cfg):
    for doc in all_manifests(cfg):
        assert kubernetes_validate.validate(doc, version, strict=True), doc["metadata"]["name"]


def test_strict_validation_would_catch_a_typo():
    """The validation above is not vacuous: an unknown field fails it."""
    doc = m.deployment("churn", "stable", "1", img("a"), 1, True, KubernetesTargetConfig())
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_deployment_pod_spec():
    cfg = full_config()
    doc = m.deployment("credit_risk", "canary", "12", img("d"), 3, False, cfg)
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["name"] == "credit-risk-canary" and meta["namespace"] == NS
    assert meta["labels"] == {
        "app": "credit-risk",
        "role": "canary",
        "model-version": "12",
        "app.kubernetes.io/managed-by": "mlops",
    }
    assert spec["selector"] == {"matchLabels": {"app": "credit-risk", "role": "canary"}}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "credit-risk",
        "role": "canary",
        "model-version": "12",
        "serving": "false",
    }
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "100%", "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "model-server"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["nodeSelector"] == {"pool": "serving", "gpu-count": "0"}
    assert pod["tolerations"][1] == {
        "key": "spot",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    (c,) = pod["containers"]
    assert c["image"] == img("d")
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # the only writable place
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLOPS_MODEL_NAME"] == env["MLOPS_SERVE_MODEL_NAME"] == "credit_risk"
    assert env["MLOPS_MODEL_VERSION"] == env["MLOPS_SERVE_MODEL_VERSION"] == "12"
    assert env["MLOPS_SERVE_VARIANT"] == "canary"
    assert env["MLOPS_IMAGE_DIGEST"] == "sha256:" + "d" * 64
    assert env["MLOPS_LOG_LEVEL"] == "debug"
    assert c["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]
    token = {"secretKeyRef": {"name": "endpoint-token", "key": "token"}}  # from the Secret, never inline
    assert {"name": "MLOPS_SERVE_API_TOKEN", "valueFrom": token} in c["env"]
    assert c["command"] == ["mlops", "serve"]
    args = c["args"]
    assert args[args.index("--model-uri") + 1] == "models:/credit_risk/12"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--workers") + 1] == "2"
    assert args[args.index("--variant") + 1] == "canary"
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_default_pod_serves_the_model_baked_in_the_image():
    doc = m.deployment("churn", "stable", "3", img("a"), 10, True, KubernetesTargetConfig())
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["--model-uri", "/opt/model"]
    assert "envFrom" not in c  # no MLflow needed in the pod
    assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLOPS_HOME"].startswith("/tmp/")  # writable with a read-only root filesystem
    assert "MLOPS_SERVE_API_TOKEN" not in env  # no token Secret configured: the endpoint is open


def test_services():
    cfg = KubernetesTargetConfig()
    role = m.role_service("churn", "canary", cfg)
    assert role["metadata"]["name"] == "churn-canary"
    assert role["spec"]["selector"] == {"app": "churn", "role": "canary"}
    pinned = m.main_service("churn", {"stable": 100}, m.MODE_DEPLOYMENTS, cfg)
    assert pinned["spec"]["selector"] == {"app": "churn", "role": "stable"}
    assert json.loads(pinned["metadata"]["annotations"][m.ANN_WEIGHTS]) == {"stable": 100}
    split = m.main_service("churn", {"stable": 90, "canary": 10, "green": 0}, m.MODE_DEPLOYMENTS, cfg)
    assert split["spec"]["selector"] == {"app": "churn", "serving": "true"}
    assert json.loads(split["metadata"]["annotations"][m.ANN_WEIGHTS]) == {"canary": 10, "stable": 90}
    nothing = m.main_service("churn", {}, m.MODE_DEPLOYMENTS, cfg)
    assert nothing["spec"]["selector"] == {"app": "churn", "serving": "true"}


@pytest.mark.parametrize(
    ("weight", "total", "expected"),
    [
        (10, 10, 1),
        (50, 10, 5),
        (100, 10, 10),
        (90, 10, 9),
        (0, 10, 0),
        (1, 10, 1),  # routed: never 0 pods
        (4, 10, 1),
        (5, 10, 1),  # 0.5 rounds half up
        (15, 10, 2),
        (95, 10, 10),
        (99, 10, 10),
        (50, 1, 1),
        (33, 3, 1),
        (67, 3, 2),
        (25, 4, 1),
    ],
)
def test_weight_to_replicas(weight, total, expected):
    assert m.replicas_for(weight, total) == expected


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/mlops/churn-serving:1.2.3",
        "registry.example.com/mlops/churn-serving:latest",
        "churn-serving",
        "registry.example.com/churn@sha256:" + "a" * 63,
        "registry.example.com/churn@sha256:" + "A" * 64,
        "registry.example.com/churn@sha512:" + "a" * 64,
        "",
        None,
    ],
)
def test_mutable_or_malformed_image_references_are_refused(image):
    with pytest.raises(DeploymentError, match="digest"):
        m.check_image(image)


@pytest.mark.parametrize(
    "image",
    [
        img("a"),
        "localhost:5000/churn-serving@sha256:" + "0" * 64,
        "registry.example.com/mlops/churn-serving:1.2.3@sha256:" + "f" * 64,  # tag + digest: the digest wins
    ],
)
def test_digest_references_are_accepted(image):
    assert m.check_image(image) == image


def test_model_names_become_kubernetes_names():
    assert m.role_name("credit_risk", "previous") == "credit-risk-previous"
    with pytest.raises(DeploymentError, match="cannot name Kubernetes objects"):
        m.k8s_name("x" * 60)


# ------------------------------------------------------------------------------------ deploy & weights


def test_a_deployed_canary_takes_no_traffic_but_is_reachable():
    t, api, _ = with_stable()
    b = t.deploy("canary", *V2)
    assert b.url == "http://churn-canary.mlops.svc.cluster.local:80"
    assert (b.role, b.version, b.image) == ("canary", "2", V2[1])
    assert t.weights() == {"stable": 100}
    assert share(api) == {"stable": 1.0}
    assert versions_served(api) == {"1"}
    # one pod, ready, not labelled for the user-facing Service, reachable through its own Service
    assert replicas(api) == {"stable": 10, "canary": 1}
    assert dep(api, "canary")["spec"]["template"]["metadata"]["labels"]["serving"] == "false"
    direct = api.endpoints(NS, "churn-canary")
    assert len(direct) == 1 and direct[0].labels["model-version"] == "2"
    assert set(t.backends()) == {"stable", "canary"}


def test_the_first_deploy_takes_no_traffic_until_weighted():
    t, api, _ = make()
    t.deploy("stable", *V1)
    assert api.endpoints(NS, "churn") == [] and t.weights() == {}
    assert len(api.endpoints(NS, "churn-stable")) == 10  # warm: stable keeps all replicas
    t.set_weights({"stable": 100})
    assert share(api) == {"stable": 1.0}
    svc = api.objects[("Service", NS, "churn")]
    assert svc["spec"]["selector"] == {"app": "churn", "role": "stable"}
    assert svc["metadata"]["annotations"][m.ANN_MODE] == m.MODE_DEPLOYMENTS


def test_canary_steps_map_weights_to_replicas():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    t.set_weights({"stable": 90, "canary": 10})
    assert replicas(api) == {"stable": 9, "canary": 1}
    assert share(api) == {"stable": 0.9, "canary": 0.1}
    assert api.objects[("Service", NS, "churn")]["spec"]["selector"] == {"app": "churn", "serving": "true"}
    t.set_weights({"stable": 50, "canary": 50})
    assert replicas(api) == {"stable": 5, "canary": 5}
    assert share(api) == {"stable": 0.5, "canary": 0.5}
    t.set_weights({"canary": 100})
    assert replicas(api) == {"stable": 10, "canary": 10}  # stable stays warm at weight 0
    assert share(api) == {"canary": 1.0}
    assert t.weights() == {"canary": 100}
    t.set_weights({"stable": 100})  # back again
    assert share(api) == {"stable": 1.0} and replicas(api) == {"stable": 10, "canary": 1}


def test_edge_weights():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    t.set_weights({"stable": 99, "canary": 1})
    assert replicas(api) == {"stable": 10, "canary": 1}  # 1 % of 10 pods is still one pod
    assert share(api) == {"stable": round(10 / 11, 3), "canary": round(1 / 11, 3)}
    t.set_weights({"stable": 100, "canary": 0})
    assert share(api) == {"stable": 1.0}
    assert t.weights() == {"stable": 100}
    # the canary is unrouted again: back on standby; the Service pins stable, so its pods' serving label
    # does not matter (it is only flipped, with a pod roll, when a split needs it)
    assert replicas(api) == {"stable": 10, "canary": 1}
    assert api.objects[("Service", NS, "churn")]["spec"]["selector"] == {"app": "churn", "role": "stable"}
    t2, api2, _ = with_stable(replicas=1)
    t2.deploy("canary", *V2)
    t2.set_weights({"stable": 50, "canary": 50})
    assert replicas(api2) == {"stable": 1, "canary": 1} and share(api2) == {"stable": 0.5, "canary": 0.5}


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"stable": 90, "canary": 5}, "summing to 100"),
        ({"stable": 110, "canary": -10}, "summing to 100"),
        ({"stable": True, "canary": 99}, "integers"),
        ({"stable": 50.0, "canary": 50}, "integers"),
        ({"blue": 100}, "unknown role"),
        ({"stable": 50, "green": 50}, "not deployed"),
    ],
)
def test_invalid_weights_are_refused(weights, match):
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    before = api.writes
    with pytest.raises(DeploymentError, match=match):
        t.set_weights(weights)
    assert api.writes == before


def test_deploy_is_idempotent_and_never_replaces_a_routed_role():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    writes = api.writes
    again = t.deploy("canary", *V2)
    assert api.writes == writes and again.version == "2"
    t.set_weights({"stable": 90, "canary": 10})
    writes = api.writes
    t.set_weights({"stable": 90, "canary": 10})
    assert api.writes == writes
    with pytest.raises(DeploymentError, match="takes 10% of the traffic"):
        t.deploy("canary", *V3)
    t.set_weights({"stable": 100})
    t.deploy("canary", *V3)  # at weight 0 it may be replaced
    assert dep(api, "canary")["metadata"]["labels"]["model-version"] == "3"
    assert share(api) == {"stable": 1.0}


def test_a_mutable_tag_is_refused_before_any_api_call():
    t, api, _ = make()
    with pytest.raises(DeploymentError, match="not pinned by digest"):
        t.deploy("canary", "2", "registry.example.com/mlops/churn-serving:2")
    with pytest.raises(DeploymentError, match="by digest"):
        t.deploy("canary", "2")
    assert api.applied == []


def test_readiness_timeout_names_the_deployment_and_the_pods_reasons():
    t, api, clock = with_stable()
    api.not_ready["churn-canary"] = 'ImagePullBackOff: Back-off pulling image "registry.example.com/..."'
    with pytest.raises(DeploymentError) as err:
        t.deploy("canary", *V2)
    msg = str(err.value)
    assert "Deployment mlops/churn-canary" in msg and "churn canary v2" in msg
    assert "not ready after 30s" in msg and "0/1 pods ready" in msg
    assert "ImagePullBackOff" in msg and "churn-canary-" in msg
    assert "MinimumReplicasUnavailable" in msg
    assert "Its new pods take no traffic" in msg
    assert clock.t >= 30 and clock.sleeps == 30
    assert share(api) == {"stable": 1.0}  # the broken canary never took traffic


def test_a_role_that_cannot_grow_fails_set_weights_before_the_switch():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    api.not_ready["churn-canary"] = "CrashLoopBackOff: back-off 40s restarting failed container"
    with pytest.raises(DeploymentError, match="CrashLoopBackOff"):
        t.set_weights({"stable": 50, "canary": 50})
    assert t.weights() == {"stable": 100}
    assert versions_served(api) == {"1"}


# ------------------------------------------------------------------------------------ promote & remove


def test_promote_canary_without_previous():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    t.set_weights({"stable": 50, "canary": 50})
    t.promote("canary")
    assert t.weights() == {"stable": 100}
    assert replicas(api) == {"stable": 10}
    assert api.names("Service") == ["churn", "churn-stable"]
    assert versions_served(api) == {"2"} and share(api) == {"stable": 1.0}
    b = t.backends()
    assert set(b) == {"stable"} and (b["stable"].version, b["stable"].image) == V2
    assert dep(api, "stable")["spec"]["template"]["spec"]["containers"][0]["image"] == V2[1]
    env = {
        e["name"]: e.get("value")
        for e in dep(api, "stable")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLOPS_SERVE_VARIANT"] == "stable"


def test_blue_green_with_previous_and_instant_rollback():
    t, api, _ = with_stable()
    t.deploy("green", *V2)
    t.set_weights({"green": 100})
    assert share(api) == {"green": 1.0} and replicas(api) == {"stable": 10, "green": 10}
    t.promote("green", keep_previous=True)
    assert t.weights() == {"stable": 100}
    assert replicas(api) == {"stable": 10, "previous": 10}
    assert {r: b.version for r, b in t.backends().items()} == {"stable": "2", "previous": "1"}
    assert versions_served(api) == {"2"}
    assert len(api.endpoints(NS, "churn-previous")) == 10  # warm, reachable, no user traffic
    # Rollback: one Service update, no pod restarted.
    writes, pods = api.writes, {p.name for p in api.list_pods(NS, {"app": "churn"})}
    t.set_weights({"previous": 100})
    assert api.writes == writes + 1 and api.log[-1][:2] != ("apply", "Deployment")
    assert {p.name for p in api.list_pods(NS, {"app": "churn"})} == pods
    assert versions_served(api) == {"1"}
    # ... and the previous version becomes stable again, the bad one kept as previous
    t.promote("previous", keep_previous=True)
    assert {r: b.version for r, b in t.backends().items()} == {"stable": "1", "previous": "2"}
    assert t.weights() == {"stable": 100} and versions_served(api) == {"1"}


def test_promote_keeps_serving_the_candidate_while_stable_is_replaced():
    """While stable's pods are rolled to the new version, the Service pins the candidate."""
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    t.set_weights({"stable": 90, "canary": 10})
    seen: list[dict[str, Any]] = []
    apply = api.apply

    def spy(manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Deployment" and manifest["metadata"]["name"] == "churn-stable":
            seen.append(api.objects[("Service", NS, "churn")]["spec"]["selector"])
        return apply(manifest)

    api.apply = spy  # type: ignore[method-assign]
    t.promote("canary")
    assert seen and all(sel == {"app": "churn", "role": "canary"} for sel in seen)


def test_first_deployment_without_stable():
    t, api, _ = make()
    t.deploy("canary", *V1)
    t.set_weights({"canary": 100})
    assert share(api) == {"canary": 1.0}
    t.promote("canary", keep_previous=True)  # nothing to keep
    assert set(t.backends()) == {"stable"} and t.weights() == {"stable": 100}
    assert api.names("Service") == ["churn", "churn-stable"]
    assert versions_served(api) == {"1"}


def test_promote_stable_and_unknown_roles():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    t.set_weights({"stable": 90, "canary": 10})
    t.promote("stable")
    assert t.weights() == {"stable": 100} and share(api) == {"stable": 1.0}
    with pytest.raises(DeploymentError, match="not deployed"):
        t.promote("green")
    with pytest.raises(DeploymentError, match="unknown role"):
        t.promote("blue")


def test_remove():
    t, api, _ = with_stable()
    t.deploy("canary", *V2)
    t.set_weights({"stable": 90, "canary": 10})
    with pytest.raises(DeploymentError, match="takes 10% of the traffic"):
        t.remove("canary")
    t.set_weights({"stable": 100})
    t.remove("canary")
    assert api.names("Deployment") == ["churn-stable"] and api.names("Service") == ["churn", "churn-stable"]
    t.remove("canary")  # absent: no-op
    t.remove("green")
    assert set(t.backends()) == {"stable"}
    with pytest.raises(DeploymentError, match="takes 100%"):
        t.remove("stable")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_of_a_whole_rollout_is_valid(version):
    """Canary, abort, blue-green, rollback: everything the target applied passes strict validation."""
    t, api, _ = make(validate=version, model="credit_risk", **full_config().model_dump(exclude={"replicas"}))
    t.deploy("stable", *V1)
    t.set_weights({"stable": 100})
    t.deploy("canary", *V2)
    for w in (10, 50):
        t.set_weights({"stable": 100 - w, "canary": w})
    t.set_weights({"stable": 100})
    t.remove("canary")
    t.deploy("green", *V3)
    t.set_weights({"green": 100})
    t.promote("green", keep_previous=True)
    t.set_weights({"previous": 100})
    t.promote("previous")
    kinds = {d["kind"] for d in api.applied}
    assert kinds == {"Deployment", "Service"}
    for doc in api.applied:
        assert kubernetes_validate.validate(doc, version, strict=True)


# ------------------------------------------------------------------------------------ mode


def test_mode_follows_the_crd_and_is_recorded():
    assert make()[0].mode() == m.MODE_DEPLOYMENTS
    t, api, _ = make(argo=True)
    assert t.mode() == m.MODE_ARGO
    t2, _, _ = make(argo=True, argo_rollouts="never")
    assert t2.mode() == m.MODE_DEPLOYMENTS
    with pytest.raises(DeploymentError, match="no rollouts.argoproj.io CRD"):
        make(argo_rollouts="always")[0].mode()
    # a model first deployed without Argo keeps its mode when Argo appears later
    t3, api3, _ = make()
    t3.deploy("stable", *V1)
    api3.crds.add(m.ROLLOUTS_CRD)
    later = KubernetesTarget("churn", KubernetesTargetConfig(), api3)
    assert later.mode() == m.MODE_DEPLOYMENTS
    with pytest.raises(DeploymentError, match="remove the model's objects first"):
        KubernetesTarget("churn", KubernetesTargetConfig(argo_rollouts="always"), api3).mode()


# ------------------------------------------------------------------------------------ Argo Rollouts


def rollout(api: FakeKubeApi) -> dict[str, Any]:
    return api.objects[("Rollout", NS, "churn")]


def test_argo_canary_flow():
    t, api, _ = make(argo=True)
    t.deploy("stable", *V1)  # staged: a plain Deployment until routed
    assert api.names("Rollout") == [] and api.endpoints(NS, "churn") == []
    t.set_weights({"stable": 100})
    assert api.names("Rollout") == ["churn"] and api.names("Deployment") == []
    assert share(api) == {"stable": 1.0} and len(api.endpoints(NS, "churn-stable")) == 10

    t.deploy("canary", *V2)
    assert share(api) == {"stable": 1.0}  # staged canary: serving=false, outside the Rollout's selector
    assert len(api.endpoints(NS, "churn-canary")) == 1

    t.set_weights({"stable": 90, "canary": 10})
    r = rollout(api)
    assert r["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 10}, {"pause": {}}]
    assert r["spec"]["template"]["metadata"]["labels"]["model-version"] == "2"
    assert r["spec"]["strategy"]["canary"]["canaryMetadata"] == {"labels": {"role": "canary"}}
    assert api.names("Deployment") == []  # the canary was handed over to the Rollout
    assert share(api) == {"stable": 0.9, "canary": 0.1}
    assert (
        "patch_status",
        "Rollout",
        "churn",
        '{"controllerPause": false, "pauseConditions": null}',
    ) in api.log
    assert {b.role: b.version for b in t.backends().values()} == {"stable": "1", "canary": "2"}

    t.set_weights({"stable": 50, "canary": 50})
    assert rollout(api)["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 50}
    assert share(api) == {"stable": 0.5, "canary": 0.5}

    t.promote("canary")
    r = rollout(api)
    assert r["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 100}]
    assert r["spec"]["strategy"]["canary"]["stableMetadata"] == {"labels": {"role": "stable"}}
    assert r["metadata"]["annotations"][m.ANN_STABLE_VERSION] == "2"
    assert ("patch_status", "Rollout", "churn", '{"promoteFull": true}') in api.log
    assert t.weights() == {"stable": 100} and share(api) == {"stable": 1.0}
    assert versions_served(api) == {"2"}
    assert {b.role: b.version for b in t.backends().values()} == {"stable": "2"}
    assert api.names("Service") == ["churn", "churn-stable"]


def test_argo_abort_returns_to_the_stable_template():
    t, api, _ = make(argo=True)
    t.deploy("stable", *V1)
    t.set_weights({"stable": 100})
    t.deploy("canary", *V2)
    t.set_weights({"stable": 90, "canary": 10})
    t.set_weights({"stable": 100})
    r = rollout(api)
    assert r["spec"]["template"]["metadata"]["labels"]["model-version"] == "1"
    assert r["spec"]["strategy"]["canary"]["steps"] == []
    assert m.ANN_CANDIDATE not in r["metadata"]["annotations"]
    assert versions_served(api) == {"1"}
    t.remove("canary")
    assert set(t.backends()) == {"stable"}
    with pytest.raises(DeploymentError, match="takes 100%"):
        t.remove("stable")


def test_argo_first_deployment_and_blue_green_keep_previous():
    t, api, _ = make(argo=True)
    t.deploy("canary", *V1)
    t.set_weights({"canary": 100})
    t.promote("canary")
    assert {b.role: b.version for b in t.backends().values()} == {"stable": "1"}
    assert rollout(api)["spec"]["strategy"]["canary"]["stableMetadata"]["labels"]["role"] == "stable"
    t.deploy("green", *V2)
    t.set_weights({"green": 100})
    assert share(api) == {"green": 1.0}
    t.promote("green", keep_previous=True)
    assert {b.role: b.version for b in t.backends().values()} == {"stable": "2", "previous": "1"}
    assert versions_served(api) == {"2"}
    assert api.endpoints(NS, "churn-previous") and all(
        p.labels["serving"] == "false" for p in api.endpoints(NS, "churn-previous")
    )
    t.deploy("canary", *V3)
    with pytest.raises(DeploymentError, match="one candidate"):
        t.set_weights({"stable": 80, "canary": 10, "previous": 10})


def test_argo_canary_that_never_gets_ready():
    t, api, clock = make(argo=True)
    t.deploy("stable", *V1)
    t.set_weights({"stable": 100})
    t.deploy("canary", *V2)
    api.not_ready["churn"] = "CrashLoopBackOff: back-off 40s restarting failed container"
    with pytest.raises(DeploymentError) as err:
        t.set_weights({"stable": 90, "canary": 10})
    msg = str(err.value)
    assert "Rollout mlops/churn not ready after 30s" in msg and "'Progressing'" in msg
    assert "0/1 pods ready" in msg and "CrashLoopBackOff" in msg
    assert t.weights() == {"stable": 100}  # the annotation only moves once the pods are ready


def test_argo_rollout_structure():
    """No Rollout schema offline: the shape Argo documents, and the pod template as a valid Deployment's."""
    cfg = full_config()
    r = m.rollout(
        "credit_risk",
        version="12",
        image=img("d"),
        stable_role="stable",
        stable_version="11",
        stable_image=img("c"),
        candidate="canary",
        steps=[{"setWeight": 20}, {"pause": {}}],
        cfg=cfg,
    )
    assert (r["apiVersion"], r["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
    spec = r["spec"]
    assert spec["replicas"] == cfg.replicas
    sel = spec["selector"]["matchLabels"]
    assert sel == {"app": "credit-risk", "serving": "true"}
    assert sel.items() <= spec["template"]["metadata"]["labels"].items()
    canary = spec["strategy"]["canary"]
    assert set(canary) == {"maxSurge", "maxUnavailable", "stableMetadata", "canaryMetadata", "steps"}
    assert canary["stableMetadata"] == {"labels": {"role": "stable"}}
    assert canary["canaryMetadata"] == {"labels": {"role": "canary"}}
    assert all(set(s) in ({"setWeight"}, {"pause"}) for s in canary["steps"])
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOPS_SERVE_VARIANT"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.labels['role']"}}
    as_deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": r["metadata"],
        "spec": {"replicas": spec["replicas"], "selector": spec["selector"], "template": spec["template"]},
    }
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(as_deployment, version, strict=True)


# ------------------------------------------------------------------------------------ metrics


def prom_vector(samples: list[tuple[dict[str, str], str]], t: float = 1764115200.5) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": lab, "value": [t, v]} for lab, v in samples]},
    }


class FakePrometheus:
    def __init__(self, answers: dict[str, dict[str, Any]] | None = None, status: int = 200):
        self.queries: list[str] = []
        self.answers = answers or {}
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/prom/api/v1/query"
        q = parse_qs(urlparse(str(request.url)).query)["query"][0]
        self.queries.append(q)
        for key, body in self.answers.items():
            if q.startswith(key) and (key != "sum(mlops_http_requests_total" or "5.." not in q):
                return httpx.Response(self.status, json=body)
        return httpx.Response(self.status, json=prom_vector([]))


def metrics_target(prom: FakePrometheus, **cfg: Any):
    t, api, _ = with_stable(prometheus_url="http://prometheus.monitoring:9090/prom/", **cfg)
    t._http = httpx.Client(transport=httpx.MockTransport(prom))
    return t, api


def test_snapshot_queries_prometheus_per_role():
    prom = FakePrometheus(
        {
            "sum(mlops_http_requests_total": prom_vector([({}, "1234")]),
            "sum by (le) (mlops_http_request_duration_seconds_bucket": prom_vector(
                [({"le": "0.005"}, "1000"), ({"le": "0.01"}, "1200"), ({"le": "+Inf"}, "1234")]
            ),
            "sum by (le) (mlops_prediction_score_bucket": prom_vector(
                [({"le": "0.5"}, "900"), ({"le": "1.0"}, "1300"), ({"le": "+Inf"}, "1300")]
            ),
        }
    )
    prom.answers['sum(mlops_http_requests_total{namespace="mlops",pod=~"churn-stable-[a-z0-9]+-[a-z0-9]+",variant="stable",model_version="1",route=~"/invocations|/predict",status=~"5.."})'] = prom_vector([({}, "7")])  # fmt: skip
    t, _ = metrics_target(prom)
    s = t.snapshot("stable")
    assert s.requests == 1234.0 and s.errors == 7.0
    assert s.latency_buckets == {0.005: 1000.0, 0.01: 1200.0, math.inf: 1234.0}
    assert s.score_buckets == {0.5: 900.0, 1.0: 1300.0, math.inf: 1300.0}
    assert s.taken_at == 1764115200.5
    assert len(prom.queries) == 4
    for q in prom.queries:
        assert 'namespace="mlops"' in q and 'model_version="1"' in q and 'variant="stable"' in q
        assert 'pod=~"churn-stable-[a-z0-9]+-[a-z0-9]+"' in q
    assert sum('route=~"/invocations|/predict"' in q for q in prom.queries) == 3  # not on the score
    assert any('status=~"5.."' in q for q in prom.queries)


def test_snapshot_of_a_role_without_traffic_is_zero():
    t, _ = metrics_target(FakePrometheus())
    t.deploy("canary", *V2)
    s = t.snapshot("canary")
    assert (s.requests, s.errors, s.latency_buckets, s.score_buckets) == (0.0, 0.0, {}, {})


def test_snapshot_errors_are_deployment_errors():
    bad = {"status": "error", "errorType": "bad_data", "error": "parse error at char 12"}
    t, _ = metrics_target(FakePrometheus({"sum": bad}, status=400))
    with pytest.raises(DeploymentError, match="bad_data parse error"):
        t.snapshot("stable")
    with pytest.raises(DeploymentError, match="no canary backend"):
        t.snapshot("canary")
    t2, _, _ = with_stable()
    with pytest.raises(DeploymentError, match="prometheus_url"):
        t2.snapshot("stable")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    t3, _ = metrics_target(FakePrometheus())
    t3._http = httpx.Client(transport=httpx.MockTransport(down))
    with pytest.raises(DeploymentError, match="did not answer"):
        t3.snapshot("stable")


def test_snapshot_selector_is_configurable():
    prom = FakePrometheus()
    t, _ = metrics_target(prom, prometheus_namespace_label=None, prometheus_pod_label="kubernetes_pod_name")
    t.snapshot("stable")
    assert "namespace=" not in prom.queries[0] and 'kubernetes_pod_name=~"churn-stable-' in prom.queries[0]


# ------------------------------------------------------------------------------------ the real client, HTTP only


class FakePool:
    """Stands in for urllib3's pool manager under the official client: records requests, canned answers."""

    def __init__(self, answers: list[tuple[int, Any]]):
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kw: Any):
        import urllib3

        self.requests.append({"method": method, "url": url, **kw})
        status, body = self.answers.pop(0)
        data = json.dumps(body).encode()
        return urllib3.HTTPResponse(
            body=data,
            status=status,
            reason="x",
            headers={"Content-Type": "application/json"},
            preload_content=True,
        )


def client_api(answers: list[tuple[int, Any]]) -> tuple[ClientKubeApi, FakePool]:
    from kubernetes import client

    conf = client.Configuration()
    conf.host = "https://kube.test"
    api_client = client.ApiClient(conf)
    pool = FakePool(answers)
    api_client.rest_client.pool_manager = pool
    return ClientKubeApi(api_client), pool


def test_client_api_applies_server_side():
    doc = m.deployment("churn", "canary", "2", img("b"), 1, False, KubernetesTargetConfig())
    api, pool = client_api([(200, doc)])
    live = api.apply(doc)
    (req,) = pool.requests
    assert req["method"] == "PATCH"
    url = urlparse(req["url"])
    assert url.path == "/apis/apps/v1/namespaces/mlops/deployments/churn-canary"
    query = parse_qs(url.query)
    assert query["fieldManager"] == ["mlops-deploy"]
    assert query["force"][0].lower() == "true"  # the client sends "True"; the API server parses either
    assert req["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert json.loads(req["body"]) == doc
    assert live["spec"]["template"]["metadata"]["labels"]["serving"] == "false"  # camelCase dict back


def test_client_api_reads_deletes_and_checks_crds():
    not_found = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    svc = m.main_service("churn", {"stable": 100}, m.MODE_DEPLOYMENTS, KubernetesTargetConfig())
    api, pool = client_api(
        [
            (404, not_found),
            (200, svc),
            (404, not_found),
            (200, {"kind": "Status"}),
            (404, not_found),
            (200, {}),
        ]
    )
    assert api.get("Deployment", NS, "churn-stable") is None
    assert api.get("Service", NS, "churn")["spec"]["selector"] == {"app": "churn", "role": "stable"}
    assert api.delete("Service", NS, "churn-green") is False
    assert api.delete("Deployment", NS, "churn-green") is True
    assert api.has_crd(m.ROLLOUTS_CRD) is False
    assert pool.requests[-1]["url"].endswith(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rollouts.argoproj.io"
    )
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": m.ROLLOUTS_CRD},
           "spec": {"group": "argoproj.io", "names": {"kind": "Rollout", "plural": "rollouts"}, "scope": "Namespaced", "versions": []}}  # fmt: skip
    api2, _ = client_api([(200, crd)])
    assert api2.has_crd(m.ROLLOUTS_CRD) is True
    assert [r["method"] for r in pool.requests] == ["GET", "GET", "DELETE", "DELETE", "GET"]
    assert parse_qs(urlparse(pool.requests[3]["url"]).query)["propagationPolicy"] == ["Background"]


def test_client_api_rollout_calls():
    r = m.rollout(
        "churn", version="2", image=img("b"), stable_role="stable", stable_version="1", stable_image=img("a"),
        candidate="canary", steps=[{"setWeight": 10}, {"pause": {}}], cfg=KubernetesTargetConfig(),
    )  # fmt: skip
    api, pool = client_api([(200, r), (200, r)])
    api.apply(r)
    api.patch_status("Rollout", NS, "churn", {"promoteFull": True})
    apply_req, status_req = pool.requests
    assert urlparse(apply_req["url"]).path == "/apis/argoproj.io/v1alpha1/namespaces/mlops/rollouts/churn"
    assert apply_req["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert urlparse(status_req["url"]).path.endswith("/rollouts/churn/status")
    assert status_req["headers"]["Content-Type"] == "application/merge-patch+json"
    assert json.loads(status_req["body"]) == {"status": {"promoteFull": True}}


def test_client_api_lists_pods_with_reasons():
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "churn-canary-7d9c5b8f6-x2x7k", "labels": {"app": "churn", "role": "canary"}},
        "spec": {"containers": [{"name": "server", "image": img("b")}]},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": False,
                    "restartCount": 0,
                    "image": img("b"),
                    "imageID": "",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "registry.example.com/mlops/churn-serving@sha256:bbbb"',
                        }
                    },
                }
            ],
        },
    }
    api, pool = client_api([(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]})])
    (p,) = api.list_pods(NS, {"role": "canary", "app": "churn"})
    assert ("labelSelector", "app=churn,role=canary") in pool.requests[0]["fields"]
    assert not p.ready and p.phase == "Pending" and p.labels["role"] == "canary"
    assert p.reasons == (
        'container server: ImagePullBackOff: Back-off pulling image "registry.example.com/mlops/churn-serving@sha256:bbbb"',
    )


def test_pod_state_reasons():
    unschedulable = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                }
            ],
        },
    }
    assert pod_state(unschedulable).reasons == (
        "Unschedulable: 0/3 nodes are available: 3 Insufficient memory.",
    )
    crashing = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                }
            ],
        },
    }
    assert pod_state(crashing).reasons == (
        "container server: CrashLoopBackOff: back-off 1m20s",
        "container server: last exit OOMKilled (exit 137, 4 restarts)",
    )
    ready = {
        "metadata": {"name": "p"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_state(ready).ready and pod_state(ready).reasons == ()
