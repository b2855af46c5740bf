"""The docker training backend for real: DockerOperator -> Podman's Docker API -> a container running
this repo's ``python -m mlops.training`` -> a real MLflow server.

No registry is reachable, so the image is built here through the same Docker API: a 2 MB busybox base
(Debian's busybox-static). The container gets the host's Python installation, the repo (with its
.venv) and the host's system libraries bind-mounted read-only at the same paths, so it runs exactly
the code under test. ``.ci/setup-podman.sh`` installs Podman and serves the socket; without it the
end-to-end test skips locally and FAILS under CI=true.

The end-to-end test runs a small DAG through ``dag.test()`` in a subprocess (own AIRFLOW_HOME and
SQLite DB, like test_training_dag.py): a task returns the training spec, the factory's DockerOperator
renders argv/env from its XCom (``render_template_as_native_obj=True``), and a downstream task reads
the operator's return value with ``training_result``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import airflow  # noqa: F401  (importing airflow puts its plugins folder, ./plugins, on sys.path)
import pytest
from mlops.config.defaults import DEFAULT_DOCKER_URL, docker_url
from mlops.demo.datagen import generate_churn, write_frame
from mlops_airflow.backends import docker_training_operator

from tests.helpers import REPO

DOCKER_URL = docker_url()
#: Bump the suffix when the rootfs below changes: an existing image of this name is reused as is.
TEST_IMAGE = "localhost/mlops-test-runtime:busybox-1"
#: The host's system libraries (glibc, libstdc++, ...) that Python and the wheels link against.
HOST_LIBS = "/usr/lib/x86_64-linux-gnu"
BUSYBOX = "/usr/bin/busybox"


# --------------------------------------------------------------------------------------------------
# the engine and the image
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_api():
    """A Docker-API client of the engine, or a skip (locally) / failure (CI) naming the fix."""
    import docker

    try:
        api = docker.APIClient(base_url=DOCKER_URL, version="auto", timeout=60)
        api.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, FileNotFoundError, ...
        reason = f"no Docker-API engine at {DOCKER_URL} ({exc.__class__.__name__}: {exc}); run `sudo .ci/setup-podman.sh`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    yield api
    api.close()


def _rootfs_context() -> io.BytesIO:
    """Build context: a Dockerfile ``FROM scratch`` and a rootfs with busybox and mount points."""

    def entry(tar: tarfile.TarFile, name: str, *, kind=tarfile.DIRTYPE, mode=0o755, link="", data=b""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = b"FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nLABEL mlops.test-image=busybox-1\n"
        entry(tar, "Dockerfile", kind=tarfile.REGTYPE, mode=0o644, data=dockerfile)
        for d in ("rootfs", "rootfs/bin", "rootfs/etc", "rootfs/root", "rootfs/usr", "rootfs/usr/lib"):
            entry(tar, d)
        entry(tar, "rootfs/usr/lib/x86_64-linux-gnu")  # mount point of HOST_LIBS
        entry(tar, "rootfs/usr/lib64")
        entry(tar, "rootfs/tmp", mode=0o1777)
        # merged /usr as on Debian: the ELF interpreter is /lib64/ld-linux-x86-64.so.2
        entry(tar, "rootfs/lib", kind=tarfile.SYMTYPE, link="usr/lib")
        entry(tar, "rootfs/lib64", kind=tarfile.SYMTYPE, link="usr/lib64")
        entry(
            tar,
            "rootfs/usr/lib64/ld-linux-x86-64.so.2",
            kind=tarfile.SYMTYPE,
            link=f"{HOST_LIBS}/ld-linux-x86-64.so.2",
        )
        entry(tar, "rootfs/bin/busybox", kind=tarfile.REGTYPE, data=Path(BUSYBOX).read_bytes())
        entry(tar, "rootfs/bin/sh", kind=tarfile.SYMTYPE, link="busybox")
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
        entry(tar, "rootfs/etc/passwd", kind=tarfile.REGTYPE, mode=0o644, data=passwd)
        entry(
            tar, "rootfs/etc/group", kind=tarfile.REGTYPE, mode=0o644, data=b"root:x:0:\nnogroup:x:65534:\n"
        )
    buf.seek(0)
    return buf


@pytest.fixture(scope="session")
def test_image(docker_api) -> str:
    """The busybox runtime image, built through the Docker API once and then reused."""
    if docker_api.images(name=TEST_IMAGE):
        return TEST_IMAGE
    if not Path(BUSYBOX).exists():
        pytest.fail(f"{BUSYBOX} missing: `.ci/setup-podman.sh` installs busybox-static")
    t0 = time.monotonic()
    log = []
    for chunk in docker_api.build(
        fileobj=_rootfs_context(), custom_context=True, tag=TEST_IMAGE, rm=True, decode=True
    ):
        log.append(chunk)
        if "error" in chunk or "errorDetail" in chunk:
            pytest.fail(f"building {TEST_IMAGE} failed: {log}")
    assert docker_api.images(name=TEST_IMAGE), log
    print(f"built {TEST_IMAGE} in {time.monotonic() - t0:.1f}s")
    return TEST_IMAGE


def runtime_mounts(*extra: str) -> list[str]:
    """Host paths the busybox container needs to run this repo's Python code (same path inside)."""
    return [sys.base_prefix, str(REPO), HOST_LIBS, *extra]


# --------------------------------------------------------------------------------------------------
# configuration (no engine needed)
# --------------------------------------------------------------------------------------------------


def churn_config(image: str = TEST_IMAGE, mem_limit: str | None = None):
    from mlops.config.model import BUILTIN_MODELS_DIR, DockerConfig, get_model_config

    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    docker = DockerConfig(image=image, network_mode="host", mem_limit=mem_limit)
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"docker": docker})})


def test_operator_is_configured_from_the_model_config(monkeypatch):
    from airflow.sdk import DAG

    monkeypatch.delenv("MLOPS_DOCKER_URL", raising=False)
    spec = {"argv": ["python", "-m", "mlops.training", "--model", "churn"], "env": {"A": "1", "N": "42"}}

    class TI:
        def xcom_pull(self, task_ids=None, key="return_value", **_):
            assert (task_ids, key) == ("prepare_training", "return_value")
            return spec

    with DAG("d", schedule=None, render_template_as_native_obj=True) as dag:
        op = docker_training_operator(
            churn_config(image="localhost/mlops-train:1.0", mem_limit="3g"),
            task_id="train_docker",
            spec_xcom="{{ ti.xcom_pull(task_ids='prepare_training') }}",
            mounts=["/srv/data"],
        )
    op.render_template_fields({"ti": TI(), "task_instance": TI(), "dag": dag})
    assert op.command == spec["argv"]
    assert op.environment == {"A": "1", "N": "42"}  # a real dict, "42" still a string
    assert op.image == "localhost/mlops-train:1.0"
    assert op.network_mode == "host" and op.mem_limit == "3g"
    assert op.docker_url == DEFAULT_DOCKER_URL
    assert op.auto_remove == "success" and op.mount_tmp_dir is False
    assert op.do_xcom_push is True and op.xcom_all is True
    op._normalize_mounts()  # what execute() does first
    assert [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in op.mounts] == [
        ("/srv/data", "/srv/data", "bind", True)
    ]
    monkeypatch.setenv("MLOPS_DOCKER_URL", "tcp://127.0.0.1:2375")
    with DAG("d2", schedule=None, render_template_as_native_obj=True):
        op2 = docker_training_operator(
            churn_config(), task_id="t", spec_xcom="{{ ti.xcom_pull(task_ids='p') }}"
        )
    assert op2.docker_url == "tcp://127.0.0.1:2375"


# --------------------------------------------------------------------------------------------------
# end to end through dag.test()
# --------------------------------------------------------------------------------------------------

DAG_FILE = '''
"""Test DAG: spec task -> the docker backend's operator -> a task that reads its result."""
import json, os
from pathlib import Path

from airflow.sdk import DAG, task
from mlops.config.model import BUILTIN_MODELS_DIR, DockerConfig, get_model_config
from mlops_airflow.backends import docker_training_operator, training_result

P = json.loads(os.environ["MLOPS_TEST_DOCKER"])
cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
cfg = cfg.model_copy(update={"training": cfg.training.model_copy(
    update={"docker": DockerConfig(image=P["image"], network_mode="host")})})

with DAG(
    "docker_backend_e2e", schedule=None, render_template_as_native_obj=True,
    default_args={"owner": "mlops-tests", "retries": 0},
):
    @task
    def prepare_training() -> dict:
        return {"argv": P["argv"], "env": P["env"]}

    train = docker_training_operator(
        cfg,
        task_id="train_docker",
        spec_xcom="{{ ti.xcom_pull(task_ids='prepare_training') }}",
        docker_url=P["docker_url"],
        mounts=P["mounts"],
    )

    @task
    def collect(raw) -> dict:
        result = training_result(raw)
        Path(P["out"]).write_text(json.dumps({"raw_type": type(raw).__name__, "result": result}))
        return result

    prepare_training() >> train
    collect(train.output)
'''

RUNNER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dr = bag.dags["docker_backend_e2e"].test()
states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
print("RESULT " + json.dumps({"state": str(dr.state), "tasks": states}))
"""


def test_docker_backend_trains_and_registers_through_podman(docker_api, test_image, mlflow_uri, tmp_path):
    from mlflow import MlflowClient
    from mlops.config.model import BUILTIN_MODELS_DIR

    data_dir = tmp_path / "data"
    batch = data_dir / "batch-0001.csv"
    write_frame(generate_churn(2000, seed=1), batch)
    out = tmp_path / "collected.json"
    argv = [
        sys.executable,  # the repo's .venv python, mounted at the same path
        "-m",
        "mlops.training",
        "--model",
        "churn",
        "--models-dir",
        str(BUILTIN_MODELS_DIR),
        "--data",
        str(batch),
        "--tag",
        "mlops.backend=docker",
        "--tag",
        "mlops.test=docker-e2e",
        "--params",
        json.dumps({"max_iter": 30}),
        "--output",
        "/tmp/result.json",  # inside the container; the XCom comes from the last stdout line
    ]
    params = {
        "image": test_image,
        "docker_url": DOCKER_URL,
        "mounts": runtime_mounts(str(data_dir)),
        "argv": argv,
        "env": {
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "PYTHONUNBUFFERED": "1",
            # One OpenMP thread: on 2 shared cores under load, HistGradientBoosting's 2 spinning OpenMP
            # threads made the fit 20-400x slower (45 s instead of 0.1-2 s), in or out of a container.
            "OMP_NUM_THREADS": "1",
            "GIT_PYTHON_REFRESH": "quiet",  # no git in the image: mlflow's GitPython would warn at length
        },
        "out": str(out),
    }
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "docker_backend_e2e.py").write_text(textwrap.dedent(DAG_FILE))
    home = tmp_path / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "MLOPS_TEST_DOCKER": json.dumps(params),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(dags)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    print(f"dag.test() with the docker backend: {time.monotonic() - t0:.1f}s")
    log = proc.stdout + proc.stderr
    (tmp_path / "dag_test.log").write_text(log)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, log[-6000:]
    outcome = json.loads(lines[-1][len("RESULT ") :])
    assert outcome == {
        "state": "success",
        "tasks": {"prepare_training": "success", "train_docker": "success", "collect": "success"},
    }, log[-6000:]

    collected = json.loads(out.read_text())
    assert collected["raw_type"] == "list"  # DockerOperator (xcom_all) returns the output lines
    result = collected["result"]
    assert result["model"] == "churn" and result["train_rows"] + result["holdout_rows"] == 2000

    client = MlflowClient(mlflow_uri)
    mv = client.get_model_version("churn", result["model_version"])
    assert mv.run_id == result["run_id"]
    assert mv.tags["mlops.backend"] == "docker" and mv.tags["mlops.test"] == "docker-e2e"
    run = client.get_run(result["run_id"])
    assert run.data.tags["mlops.backend"] == "docker"
    assert run.data.params["hp.max_iter"] == "30"
    assert result["metrics"]["roc_auc"] == pytest.approx(run.data.metrics["roc_auc"], abs=1e-6)
    # auto_remove="success": no container of the test image is left behind
    assert docker_api.containers(all=True, filters={"ancestor": test_image}) == []
