"""The kubernetes training backend without a cluster: the pod the operator would create.

The operator is built inside a DAG by our factory, its templates are rendered with a stand-in ``ti``
whose ``xcom_pull`` returns the training spec, and ``build_pod_request_obj`` (what the provider's own
unit tests check) produces the pod. The pod is then validated against the real Kubernetes OpenAPI
schemas (``kubernetes-validate``, strict: unknown fields fail too).
"""

from __future__ import annotations

from typing import Any

import airflow  # noqa: F401  (importing airflow puts its plugins folder, ./plugins, on sys.path)
import pytest
from mlops.config.model import ModelConfig
from mlops_airflow.backends import (
    K8S_XCOM_RESULT_PATH,
    MLFLOW_SECRET_KEYS,
    POD_RUN_AS_USER,
    kubernetes_training_operator,
    training_result,
)

SPEC_TASK = "prepare_training"
SPEC_XCOM = "{{ ti.xcom_pull(task_ids='prepare_training') }}"
ARGV = [
    "python",
    "-m",
    "mlops.training",
    "--model",
    "churn",
    "--models-dir",
    "/opt/mlops/model_configs",
    "--data",
    "batches/batch-0001.csv",
    "--tag",
    "airflow.run_id=manual__2026-11-26T00:00:00+00:00",
    "--params",
    '{"max_iter": 50}',
    "--output",
    K8S_XCOM_RESULT_PATH,
]
SPEC = {
    "argv": ARGV,
    "env": {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",  # right for the workers, wrong in a pod
        "MLFLOW_TRACKING_PASSWORD": "not-for-pods",
        "PYTHONUNBUFFERED": "1",
        "MLOPS_RUN": "42",  # digits: must stay the string "42"
    },
}
K8S_VERSIONS = ["1.30.0", "1.37.0"]


def model_config(**kubernetes: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "churn",
            "target": "churned",
            "id_column": "customer_id",
            "features": {"numeric": ["tenure"], "categorical": ["plan"]},
            "training": {"kubernetes": {"image": "registry.example.com/mlops-train:1.2.3", **kubernetes}},
        }
    )


class FakeTI:
    """Stands in for the running task instance: what the templates and the pod labels read."""

    dag_id = "churn_training"
    task_id = "train_kubernetes"
    run_id = "manual__2026-11-26T00:00:00+00:00"
    try_number = 1
    map_index = -1

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.pulls: list[tuple[Any, str]] = []

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        self.pulls.append((task_ids, key))
        assert task_ids == SPEC_TASK and key == "return_value"
        return self.spec


@pytest.fixture(autouse=True)
def kubernetes_connection(monkeypatch):
    # The operator reads xcom-sidecar settings from its connection (none set: the provider defaults).
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes"}')


def build(cfg: ModelConfig, spec: dict[str, Any] = SPEC, spec_xcom: Any = SPEC_XCOM, **kw: Any):
    """The operator inside a DAG, rendered; returns (operator, pod as the API would receive it, ti)."""
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    with DAG("churn_training", schedule=None, render_template_as_native_obj=True) as dag:
        op = kubernetes_training_operator(cfg, task_id="train_kubernetes", spec_xcom=spec_xcom, **kw)
    ti = FakeTI(spec)
    context = {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "dag": dag}
    op.render_template_fields(context)
    # dry_run: skip only the in-cluster probe that needs kube credentials.
    pod = op.build_pod_request_obj(context, dry_run=True)
    return op, ApiClient().sanitize_for_serialization(pod), ti


def base_container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in doc["spec"]["containers"] if c["name"] == "base"]
    return c


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("gpus", [0, 2])
def test_pod_is_valid_and_carries_the_model_config(gpus, version):
    import kubernetes_validate

    cfg = model_config(
        namespace="ml-train",
        service_account="trainer",
        cpu_request="1",
        cpu_limit="2",
        memory_request="2Gi",
        memory_limit="4Gi",
        gpus=gpus,
        node_selector={"pool": "training", "gpu-count": "1"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
        mlflow_secret="mlflow-credentials",
        startup_timeout_seconds=900,
    )
    op, doc, ti = build(cfg)

    assert kubernetes_validate.validate(doc, version, strict=True)
    assert ti.pulls, "the templates did not read the spec from XCom"

    assert doc["metadata"]["namespace"] == "ml-train"
    assert doc["metadata"]["name"].startswith("train-churn-")
    labels = doc["metadata"]["labels"]
    assert labels["model"] == "churn" and labels["component"] == "training"
    assert labels["dag_id"] == "churn_training" and labels["task_id"] == "train_kubernetes"

    spec = doc["spec"]
    assert spec["serviceAccountName"] == "trainer"
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {"pool": "training", "gpu-count": "1"}  # strings, not 1
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": POD_RUN_AS_USER,
        "runAsGroup": POD_RUN_AS_USER,
        "fsGroup": POD_RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert POD_RUN_AS_USER != 0

    c = base_container(doc)
    assert c["image"] == "registry.example.com/mlops-train:1.2.3"
    assert c["command"] == ARGV and not c.get("args")
    expected_limits = {"cpu": "2", "memory": "4Gi"}
    if gpus:
        expected_limits["nvidia.com/gpu"] = str(gpus)
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": expected_limits}
    assert ("nvidia.com/gpu" in c["resources"]["limits"]) is (gpus > 0)
    assert c["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]
    # The Secret is the only source of the MLflow endpoint/credentials: env would override envFrom.
    assert {e["name"]: e["value"] for e in c["env"]} == {"PYTHONUNBUFFERED": "1", "MLOPS_RUN": "42"}
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["securityContext"] == restricted
    # The xcom sidecar (return value from /airflow/xcom/return.json) is held to the same standard.
    (sidecar,) = [x for x in spec["containers"] if x["name"] == "airflow-xcom-sidecar"]
    assert sidecar["securityContext"] == restricted
    assert {"mountPath": "/airflow/xcom", "name": "xcom"} in c["volumeMounts"]

    assert op.deferrable is True
    assert str(getattr(op.on_finish_action, "value", op.on_finish_action)) == "delete_pod"
    assert op.do_xcom_push is True and op.get_logs is True
    assert op.startup_timeout_seconds == 900


def test_spec_env_passes_through_untouched_without_the_mlflow_secret():
    _, doc, _ = build(model_config(mlflow_secret=None, tolerations=[], node_selector={}))
    c = base_container(doc)
    assert not c.get("envFrom")
    assert {e["name"]: e["value"] for e in c["env"]} == SPEC["env"]
    assert "tolerations" not in doc["spec"] or not doc["spec"]["tolerations"]


def test_secret_keys_cover_what_mlflow_reads():
    assert set(MLFLOW_SECRET_KEYS) >= {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }


def test_spec_may_be_the_upstream_tasks_xcomarg():
    from airflow.sdk import DAG, task
    from kubernetes.client import ApiClient

    with DAG("churn_training", schedule=None, render_template_as_native_obj=True) as dag:

        @task(task_id=SPEC_TASK)
        def prepare_training() -> dict:
            return SPEC

        spec = prepare_training()
        op = kubernetes_training_operator(model_config(), task_id="train_kubernetes", spec_xcom=spec)
    assert op.upstream_task_ids == {SPEC_TASK}
    ti = FakeTI(SPEC)
    context = {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "dag": dag}
    op.render_template_fields(context)
    doc = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context, dry_run=True))
    assert base_container(doc)["command"] == ARGV


def test_the_dag_serializes_with_the_operator():
    """The scheduler stores DAGs serialized: a field it cannot serialize would be an import error."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("churn_training", schedule=None, render_template_as_native_obj=True) as dag:
        kubernetes_training_operator(model_config(gpus=1), task_id="train_kubernetes", spec_xcom=SPEC_XCOM)
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert restored.get_task("train_kubernetes").task_type == "KubernetesPodOperator"


def test_a_dag_without_native_rendering_is_refused():
    from airflow.sdk import DAG

    with (
        DAG("churn_training", schedule=None),
        pytest.raises(ValueError, match="render_template_as_native_obj"),
    ):
        kubernetes_training_operator(model_config(), task_id="train_kubernetes", spec_xcom=SPEC_XCOM)


@pytest.mark.parametrize("bad", ["ti.xcom_pull(task_ids='p')", "{{ a }} {{ b }}", "x {{ a }}"])
def test_spec_xcom_must_be_one_jinja_expression(bad):
    with pytest.raises(ValueError, match="one Jinja expression"):
        kubernetes_training_operator(model_config(), task_id="t", spec_xcom=bad)


def test_unknown_toleration_keys_fail_at_parse_time():
    cfg = model_config(tolerations=[{"key": "a", "opertor": "Exists"}])
    with pytest.raises(ValueError, match="opertor"):
        kubernetes_training_operator(cfg, task_id="t", spec_xcom=SPEC_XCOM)


def test_keyword_arguments_override_the_defaults():
    op, doc, _ = build(model_config(), image_pull_policy="Always", kubernetes_conn_id="kubernetes_default")
    assert base_container(doc)["imagePullPolicy"] == "Always"


def test_training_result_reads_every_backends_return_value():
    result = {"model": "churn", "run_id": "abc", "model_version": "3", "metrics": {"roc_auc": 0.8}}
    assert training_result(result) == result  # local, kubernetes: the dict itself
    docker_line = '{"metrics": {"roc_auc": 0.8}, "model": "churn", "model_version": "3", "run_id": "abc"}'
    assert training_result(docker_line) == result  # docker: the last output line
    assert training_result("warning: something\n" + docker_line + "\n") == result
    # docker with xcom_all: every output line, a warning printed after the result included
    assert training_result(["fitting ...", docker_line, "Exception ignored in atexit"]) == result
    for bad in ("Traceback ...", "", None, {"run_id": "abc"}, "[1, 2]"):
        with pytest.raises(ValueError):
            training_result(bad)


def test_an_empty_spec_env_gives_a_pod_without_env():
    """The DAG's spec for kubernetes carries no env: everything MLflow needs comes from the Secret."""
    _, doc, _ = build(model_config(), spec={"argv": ARGV, "env": {}})
    c = base_container(doc)
    assert not c.get("env")
    assert c["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]
