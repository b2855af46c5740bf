"""The ``docker`` and ``kubernetes`` training backends: configured provider operators, nothing more.

Both factories return the provider's own operator (``DockerOperator``, ``KubernetesPodOperator``),
configured from the model config, whose command and environment are templated from an upstream task's
XCom: a dict ``{"argv": [...], "env": {...}}`` (the *training spec*). ``argv`` is the container's whole
command line, interpreter included (``["python", "-m", "mlops.training", "--model", ...]``); it replaces
the image's entrypoint on Kubernetes and its CMD on Docker (so the image must not set an ENTRYPOINT).

The DAG must set ``render_template_as_native_obj=True`` so that the templates render to a real list and
dict; the factories refuse a DAG that does not.

The providers are imported inside the factories. That keeps *this* module cheap, but a DAG that builds
the operators at parse time pays their import there: about 0.2 s for the Docker provider and about
2.3 s for the Kubernetes one (which also loads the ``kubernetes`` client library).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from mlops.config import defaults, pods

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.docker.operators.docker import DockerOperator
    from mlops.config.model import ModelConfig

#: Where the KPO's xcom sidecar reads the task's return value; pass it as ``--output`` in the argv.
K8S_XCOM_RESULT_PATH = "/airflow/xcom/return.json"

#: Non-root user and group the training pod runs as (the image's user: the platform's pod schema).
POD_RUN_AS_USER = pods.RUN_AS_USER

#: Variables the Kubernetes Secret ``kubernetes.mlflow_secret`` provides. A container's ``env`` wins over
#: its ``envFrom``, so when the Secret is used these keys are dropped from the spec's env: a tracking URI
#: that is right for the Airflow workers (say 127.0.0.1) must not shadow the in-cluster one.
MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)

_JINJA = re.compile(r"^\s*\{\{(?P<expr>.+)\}\}\s*$", re.DOTALL)


def _spec_expression(spec_xcom: Any) -> tuple[str, Any]:
    """The Jinja expression (without braces) that yields the spec dict, and the upstream task if known.

    ``spec_xcom`` is either a template string such as ``"{{ ti.xcom_pull(task_ids='prepare_training') }}"``
    or the XComArg of the task that returns the spec (``prepare_training()`` / ``op.output``).
    """
    if isinstance(spec_xcom, str):
        m = _JINJA.match(spec_xcom)
        if not m or "}}" in m.group("expr") or "{{" in m.group("expr"):
            raise ValueError(
                "spec_xcom must be one Jinja expression like \"{{ ti.xcom_pull(task_ids='prepare_training') }}\", "
                f"got {spec_xcom!r}"
            )
        return f"({m.group('expr').strip()})", None
    operator, key = getattr(spec_xcom, "operator", None), getattr(spec_xcom, "key", None)
    if operator is None or key is None:
        raise TypeError(f"spec_xcom must be a Jinja expression string or a task's XComArg, got {spec_xcom!r}")
    return f"ti.xcom_pull(task_ids={operator.task_id!r}, key={key!r})", operator


def _template(expr: str, field: str) -> str:
    return "{{ " + f"{expr}[{field!r}]" + " }}"


def _env_template(expr: str, drop: tuple[str, ...] = ()) -> str:
    if not drop:
        return _template(expr, "env")
    # The spec's env without the keys in `drop`, still rendered to a real dict (native rendering).
    return "{{ dict(" + f"{expr}['env'] | items | rejectattr('0', 'in', {list(drop)!r})" + ") }}"


def _finish(op: Any, upstream: Any) -> Any:
    if upstream is not None:
        op.set_upstream(upstream)
    dag = op.dag if op.has_dag() else None
    if dag is not None and not dag.render_template_as_native_obj:
        raise ValueError(
            f"{dag.dag_id}.{op.task_id}: the DAG needs render_template_as_native_obj=True so that the "
            "training spec's argv and env render to a list and a dict, not to their text"
        )
    return op


def docker_training_operator(
    cfg: ModelConfig,
    *,
    task_id: str,
    spec_xcom: Any,
    docker_url: str | None = None,
    mounts: list[str] | None = None,
    **kw: Any,
) -> DockerOperator:
    """``DockerOperator`` that runs the training spec in ``cfg.training.docker.image``.

    - ``docker_url``: Docker-API engine (a Docker or Podman socket); default ``MLOPS_DOCKER_URL``
      (read with ``mlops.config.defaults``: no pydantic-settings at parse time).
    - ``mounts``: host paths bind-mounted read-only at the same path inside (the data root, so the
      ``--data`` paths of the argv are valid in the container).
    - The return value (XCom) is the container's last output line: the training result as a compact
      JSON *string* (``mlops train`` prints it last). Read it with :func:`training_result`.
    - ``**kw`` goes to ``DockerOperator`` and overrides the defaults set here.
    """
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import Mount

    expr, upstream = _spec_expression(spec_xcom)
    d = cfg.training.docker
    params: dict[str, Any] = {
        "task_id": task_id,
        "image": d.image,
        "command": _template(expr, "argv"),
        "environment": _env_template(expr),
        "docker_url": docker_url or defaults.docker_url(),
        "network_mode": d.network_mode,
        "mem_limit": d.mem_limit,
        "mounts": [Mount(target=p, source=p, type="bind", read_only=True) for p in (mounts or [])],
        # Nothing of the training uses Airflow's host temp dir, and a remote engine cannot mount it.
        "mount_tmp_dir": False,
        # provider 4.x: "never" | "success" | "force" (no booleans any more)
        "auto_remove": "success",
        "do_xcom_push": True,
        # every output line: training_result() takes the last JSON result line, so a warning printed
        # after it (at interpreter exit, say) cannot hide the result
        "xcom_all": True,
        "force_pull": False,
        "tty": False,
        "labels": {"mlops.model": cfg.name, "mlops.component": "training"},
    }
    params.update(kw)
    return _finish(DockerOperator(**params), upstream)


def _k8s_model(kind: str, raw: dict[str, Any], what: str) -> Any:
    """The kubernetes client model ``kind`` (``V1Toleration``, ...) of ``raw``, nested models included.

    Keys are Kubernetes' own camelCase names or the client's snake_case ones; an unknown key is a
    ValueError naming ``what``.
    """
    from kubernetes.client import models as k8s

    cls = getattr(k8s, kind)
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = sorted(k for k in raw if k not in by_json and k not in cls.attribute_map)
    if unknown:
        raise ValueError(f"{what} {raw!r}: unknown keys {unknown}")
    kwargs = {}
    for key, value in raw.items():
        attr = by_json.get(key, key)
        nested = cls.openapi_types[attr]
        is_model = isinstance(value, dict) and hasattr(k8s, nested)
        kwargs[attr] = _k8s_model(nested, value, f"{what}.{key}") if is_model else value
    return cls(**kwargs)


def _toleration(raw: dict[str, Any]) -> Any:
    """A toleration from the model config; Kubernetes' own camelCase keys are accepted."""
    return _k8s_model("V1Toleration", raw, "toleration")


def kubernetes_training_operator(
    cfg: ModelConfig, *, task_id: str, spec_xcom: Any, **kw: Any
) -> KubernetesPodOperator:
    """``KubernetesPodOperator`` that runs the training spec as a pod, configured from ``cfg.training.kubernetes``.

    Deferrable, pod deleted when done, logs streamed, the platform's pod schema
    (:mod:`mlops.config.pods`: a non-root uid, no service-account token, the restricted security
    context on every container, xcom sidecar included: fits the "restricted" Pod Security Standard).
    MLflow endpoint and credentials come from the Secret ``mlflow_secret`` through ``envFrom``. The return value (XCom) is the parsed JSON the argv's
    ``--output /airflow/xcom/return.json`` wrote. ``**kw`` goes to the operator and overrides these.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import literal
    from kubernetes.client import models as k8s

    expr, upstream = _spec_expression(spec_xcom)
    k = cfg.training.kubernetes
    limits = {"cpu": k.cpu_limit, "memory": k.memory_limit}
    if k.gpus > 0:
        limits["nvidia.com/gpu"] = str(k.gpus)
    container_security = _k8s_model("V1SecurityContext", pods.container_security_context(), "securityContext")
    env_from = []
    if k.mlflow_secret:
        env_from.append(k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=k.mlflow_secret)))
    params: dict[str, Any] = {
        "task_id": task_id,
        "name": f"train-{cfg.name.replace('_', '-')}",
        "namespace": k.namespace,
        "image": k.image,
        "image_pull_policy": "IfNotPresent",
        "cmds": _template(expr, "argv"),
        "env_vars": _env_template(expr, MLFLOW_SECRET_KEYS if k.mlflow_secret else ()),
        "env_from": env_from,
        # literal(): these are template fields, and native rendering would turn "2" into the int 2
        # (a node selector value "1" would then be rejected by the API server).
        "container_resources": literal(
            k8s.V1ResourceRequirements(
                requests={"cpu": k.cpu_request, "memory": k.memory_request}, limits=limits
            )
        ),
        "node_selector": literal(dict(k.node_selector)),
        "tolerations": [_toleration(t) for t in k.tolerations],
        "service_account_name": k.service_account,
        # Training talks to MLflow, never to the Kubernetes API.
        "automount_service_account_token": False,
        "security_context": _k8s_model(
            "V1PodSecurityContext", pods.pod_security_context(POD_RUN_AS_USER), "securityContext"
        ),
        "container_security_context": container_security,
        "xcom_sidecar_container_security_context": container_security,
        "labels": {**pods.component_labels("training"), "component": "training", "model": cfg.name},
        "startup_timeout_seconds": k.startup_timeout_seconds,
        "deferrable": True,
        "on_finish_action": "delete_pod",
        "do_xcom_push": True,
        "get_logs": True,
        "log_events_on_failure": True,
    }
    params.update(kw)
    return _finish(KubernetesPodOperator(**params), upstream)


def training_result(value: Any) -> dict[str, Any]:
    """The training result dict from any backend's return value.

    ``local`` and ``kubernetes`` return the dict itself; ``docker`` returns the container's last output
    line, the result as JSON text. Raises ``ValueError`` when ``value`` is neither.
    """
    if isinstance(value, list | tuple):  # DockerOperator with xcom_all: the output lines
        value = "\n".join(str(v) for v in value)
    if isinstance(value, str):
        text = value
        value = None
        for line in reversed([ln.strip() for ln in text.splitlines() if ln.strip()]):
            try:
                candidate = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(candidate, dict) and "run_id" in candidate:
                value = candidate
                break
        if value is None:
            raise ValueError(f"training output holds no JSON result line: {text[-500:]!r}")
    if not isinstance(value, dict) or "run_id" not in value or "model_version" not in value:
        raise ValueError(f"not a training result (needs run_id and model_version): {value!r}")
    return value
