"""The serving image for real: a model version registered in a real MLflow server -> the Dockerfile's
``serving`` target built through Podman's Docker API -> pushed to a real local registry (Debian's
docker-registry) -> its digest recorded on the model version -> the image run by digest with Podman,
answering ``POST /invocations`` with the same predictions as the pipeline it was made from.

``.ci/setup-podman.sh`` installs and starts everything (Podman's socket, the registry on
127.0.0.1:5001, the local Python base image). Without it these tests skip locally and FAIL under
CI=true, as in test_docker_backend.py. No mocks: the only stand-ins are absent (no cluster: the
Kubernetes builder Pod is checked as data in tests/unit/test_images.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from mlops.config.defaults import docker_url
from mlops.packaging import context, engine, errors, locks, record, refs

from tests.helpers import free_port, save_churn_model

DOCKER_URL = docker_url()
REGISTRY = os.environ.get("MLOPS_IMAGE_REGISTRY") or refs.DEFAULT_REGISTRY
IN_CI = os.environ.get("CI", "").lower() == "true"
#: Not the backends' localhost/mlops-train:latest: a test run does not replace a developer's image.
TRAINING_TAG = "localhost/mlops-train:test"


def _unavailable(reason: str) -> None:
    reason += "; run `sudo bash .ci/setup-podman.sh`"
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def api():
    """The Docker-API engine, the local registry and the base image, or a skip (locally) / failure (CI)."""
    try:
        client = engine.engine(DOCKER_URL)
    except errors.EngineUnreachable as exc:
        _unavailable(str(exc))
    try:
        engine.check_registry(REGISTRY)
    except errors.RegistryUnreachable as exc:
        client.close()
        _unavailable(str(exc))
    base = refs.default_base_image()
    if not client.images(name=base):
        client.close()
        _unavailable(f"no base image {base}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def registered(mlflow_uri, tmp_path_factory):
    """A churn pipeline registered as version 1 of a model of its own; (name, version, pipeline, cfg)."""
    import mlflow
    from mlflow import MlflowClient

    # A fixed name (the MLflow server is new per session): a re-run pushes to the same repository, so
    # the registry already holds the unchanged layers, as in real use.
    name = "churn-image-e2e"
    path = tmp_path_factory.mktemp("model") / "model"
    pipe, cfg = save_churn_model(path, seed=5)
    client = MlflowClient(mlflow_uri)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(path), artifact_path="model")
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return name, mv.version, run.info.run_id, pipe, cfg


@contextlib.contextmanager
def running(api, image: str, env: dict[str, str]):
    """A container of ``image`` on the host network (loopback only), removed afterwards."""
    host_config = api.create_host_config(network_mode="host")
    ctr = api.create_container(image, environment=env, host_config=host_config)
    cid = ctr["Id"]
    try:
        api.start(cid)
        yield cid
    finally:
        with contextlib.suppress(Exception):
            api.stop(cid, timeout=20)
        with contextlib.suppress(Exception):
            api.remove_container(cid, force=True)


def wait_ready(url: str, api, cid: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2, trust_env=False).status_code == 200:
                return
        if api.inspect_container(cid)["State"]["Status"] == "exited":
            break
        time.sleep(0.5)
    logs = api.logs(cid).decode(errors="replace")
    pytest.fail(f"{url}/ready not 200 within {timeout}s; container log:\n{logs[-4000:]}")


def test_serving_image_built_pushed_recorded_and_served_by_digest(api, registered, mlflow_uri):
    from mlflow import MlflowClient
    from mlops.demo.datagen import generate_churn

    name, version, run_id, pipe, cfg = registered
    t0 = time.monotonic()
    ref = engine.build_and_push(
        name, version, tracking_uri=mlflow_uri, registry=REGISTRY, docker_url=DOCKER_URL
    )
    build_s = time.monotonic() - t0
    assert ref.repository == f"{REGISTRY}/mlops/{name}-serving" and ref.tag == f"v{version}"

    # the digest is the registry's own for the tag, and it is what the model version now records
    resp = httpx.head(
        f"http://{REGISTRY}/v2/mlops/{name}-serving/manifests/v{version}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
        trust_env=False,
    )
    assert resp.status_code == 200, resp.text
    assert ref.digest == resp.headers["Docker-Content-Digest"]
    client = MlflowClient(mlflow_uri)
    record.record_image(client, name, version, ref)
    tags = client.get_model_version(name, version).tags
    assert tags["image"] == f"{REGISTRY}/mlops/{name}-serving@{ref.digest}"
    assert tags["image.digest"] == ref.digest
    assert record.recorded_image(client, name, version) == ref

    # what the image carries: labels, non-root user, the model, a health check
    info = api.inspect_image(ref.by_tag)
    labels = info["Config"]["Labels"]
    assert labels["io.mlops.model.name"] == name and labels["io.mlops.model.version"] == str(version)
    assert labels["io.mlops.model.run_id"] == run_id
    assert labels["org.opencontainers.image.revision"] == context.git_revision()
    assert "org.opencontainers.image.source" in labels
    assert info["Config"]["User"] == "10001:10001"
    assert f"MLOPS_SERVE_MODEL_VERSION={version}" in info["Config"]["Env"]
    health = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .HealthCheck}}", ref.by_tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/health" in health, health
    size_mb = info["Size"] / 1e6

    # run it by digest (as a deployment does), on another port, loopback only
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"MLOPS_SERVING_PORT": str(port), "MLOPS_SERVE_HOST": "127.0.0.1", "MLOPS_IMAGE_DIGEST": ref.digest}
    # pulled from the registry by digest, as a deployment does (the engine may already hold it)
    t1 = time.monotonic()
    api.pull(ref.repository, tag=ref.digest)
    with running(api, ref.by_digest, env) as cid:
        wait_ready(url, api, cid)
        ready_s = time.monotonic() - t1
        df = generate_churn(25, seed=77)
        X = df[cfg.features.all]
        payload = {"dataframe_split": json.loads(X.to_json(orient="split", index=False))}
        resp = httpx.post(f"{url}/invocations", json=payload, timeout=30, trust_env=False)
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == pipe.predict(X).tolist()
        bad = httpx.post(
            f"{url}/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}}, timeout=30
        )
        assert bad.status_code == 422, bad.text  # the signature travelled with the model
        version_info = httpx.get(f"{url}/version", timeout=5, trust_env=False).json()
        assert version_info["model"] == name and version_info["model_version"] == str(version)
        assert version_info["image_digest"] == ref.digest
        # the image's HEALTHCHECK command, run by Podman inside the container
        hc = subprocess.run(["podman", "healthcheck", "run", cid], capture_output=True, text=True, timeout=60)
        assert hc.returncode == 0, hc.stdout + hc.stderr
        # the server is PID 1 (signals reach it) and runs as the image's non-root user
        ex = api.exec_create(cid, ["python", "-c", "print(open('/proc/1/status').read())"])
        status = api.exec_start(ex["Id"]).decode()
        uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
        assert uid_line.split()[1:] == ["10001"] * 4, status
        ex = api.exec_create(cid, ["cat", "/proc/1/cmdline"])
        assert b"mlops\x00serve" in api.exec_start(ex["Id"]).replace(b"/opt/venv/bin/", b"")
        api.stop(cid, timeout=30)  # SIGTERM: graceful shutdown, exit code 0
        assert api.wait(cid, timeout=60)["StatusCode"] == 0, api.logs(cid).decode(errors="replace")[-3000:]
    print(f"serving image {ref}: build+push {build_s:.1f}s, {size_mb:.0f} MB, ready in {ready_s:.1f}s")


def test_training_image_runs_the_training_entrypoint(api, mlflow_uri, tmp_path):
    """The training image as the docker backend runs it: the spec's argv as the whole command, the
    data folder mounted read-only at the same path, MLflow over the host network; it trains,
    registers a version and prints the result line the backend's XCom parser reads."""
    from mlflow import MlflowClient
    from mlops.config.model import BUILTIN_MODELS_DIR
    from mlops.data.io import file_sha256
    from mlops.demo.datagen import generate_churn, write_frame
    from mlops.training.spec import entrypoint_argv
    from mlops_airflow.backends import training_result

    t0 = time.monotonic()
    ref = engine.build_training_image(TRAINING_TAG, docker_url=DOCKER_URL)
    build_s = time.monotonic() - t0
    info = api.inspect_image(ref.by_tag)
    assert info["Config"]["User"] == "10001:10001"
    assert not info["Config"].get("Entrypoint"), "the backends replace the command: no ENTRYPOINT"
    assert info["Config"]["Labels"]["io.mlops.component"] == "training"

    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)  # pytest's folders are 0700; the container runs as uid 10001
    batch = data / "batch-0001.csv"
    write_frame(generate_churn(1500, seed=3), batch)
    # a private copy of the churn config under its own name: no other test's registry entry is touched
    name = "churn_training_image"
    raw = yaml.safe_load((BUILTIN_MODELS_DIR / "churn.yaml").read_text())
    raw["name"] = name
    models = data / "models"
    models.mkdir(mode=0o755)
    (models / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    argv = entrypoint_argv(
        name,
        {"repo": str(data), "paths": [batch.name], "rev": "test", "digest": file_sha256(batch)},
        fetch=False,
        models_dir=str(models),
        tags={"mlops.backend": "docker", "mlops.test": "training-image"},
        params={"max_iter": 20},
        output="/tmp/result.json",
    )
    assert argv[:3] == ["python", "-m", "mlops.training"]
    env = {"MLFLOW_TRACKING_URI": mlflow_uri, "OMP_NUM_THREADS": "1"}
    host_config = api.create_host_config(
        network_mode="host", binds={str(data): {"bind": str(data), "mode": "ro"}}
    )
    ctr = api.create_container(ref.by_tag, command=argv, environment=env, host_config=host_config)
    try:
        api.start(ctr["Id"])
        code = api.wait(ctr["Id"], timeout=300)["StatusCode"]
        out = api.logs(ctr["Id"], stdout=True, stderr=False).decode(errors="replace")
        err = api.logs(ctr["Id"], stdout=False, stderr=True).decode(errors="replace")
    finally:
        api.remove_container(ctr["Id"], force=True)
    assert code == 0, err[-4000:]
    result = training_result(out)
    assert result["train_rows"] + result["holdout_rows"] == 1500
    assert result["model"] == name
    mv = MlflowClient(mlflow_uri).get_model_version(name, result["model_version"])
    assert mv.run_id == result["run_id"] and mv.tags["mlops.test"] == "training-image"
    print(f"training image {ref}: build {build_s:.1f}s, {info['Size'] / 1e6:.0f} MB")


def test_build_failure_reports_the_log_tail(api, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {refs.default_base_image()} AS serving\nRUN echo step-before-failure && exit 3\n"
    )
    with pytest.raises(errors.ImageBuildError) as err:
        engine.build_image(api, context, tag="localhost/mlops-test-broken:1", target="serving", args={})
    assert "step-before-failure" in err.value.log_tail
    assert "localhost/mlops-test-broken:1" in str(err.value)


def test_unreachable_registry_fails_before_building(api, registered, mlflow_uri):
    name, version, *_ = registered
    closed = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(errors.RegistryUnreachable, match=closed):
        engine.build_and_push(name, version, tracking_uri=mlflow_uri, registry=closed, docker_url=DOCKER_URL)
    assert time.monotonic() - t0 < 15


def test_base_image_has_python_and_venv(api):
    """The base image from infra/images/make-base-image.sh: Python 3.11 with the venv module."""
    out = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", refs.default_base_image(), "python3", "-c",
         "import platform, venv, ensurepip; print(platform.python_version())"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("3.11."), out.stdout
    assert Path(locks.images_dir() / "make-base-image.sh").is_file()
