"""The pure parts of mlops.packaging: references, digests, locks, build context, Dockerfile, and the
Kubernetes builder Pod (checked against the real Kubernetes OpenAPI schemas, never run: no cluster).

The real build, push, digest recording and run are in tests/integration/test_images.py.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from mlops.packaging import context, engine, errors, locks, record, refs
from mlops.packaging.refs import ImageRef

from tests.helpers import REPO, free_port

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "0123456789abcdef" * 4


# ------------------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest", "registry", "path"),
    [
        ("127.0.0.1:5001/mlops/churn-serving:v3", "127.0.0.1:5001/mlops/churn-serving", "v3", None, "127.0.0.1:5001", "mlops/churn-serving"),
        (f"127.0.0.1:5001/mlops/churn-serving@{D1}", "127.0.0.1:5001/mlops/churn-serving", None, D1, "127.0.0.1:5001", "mlops/churn-serving"),
        (f"registry.example.com/a/b:1.0@{D2}", "registry.example.com/a/b", "1.0", D2, "registry.example.com", "a/b"),
        ("localhost/mlops-train:latest", "localhost/mlops-train", "latest", None, "localhost", "mlops-train"),
        ("localhost:5000/x", "localhost:5000/x", None, None, "localhost:5000", "x"),
        ("library/python:3.11-slim", "library/python", "3.11-slim", None, None, "library/python"),
    ],
)  # fmt: skip
def test_image_ref_parse(text, repository, tag, digest, registry, path):
    ref = ImageRef.parse(text)
    assert (ref.repository, ref.tag, ref.digest) == (repository, tag, digest)
    assert (ref.registry, ref.path) == (registry, path)
    assert ImageRef.parse(str(ref)) == ref


def test_by_digest_is_immutable_reference_and_needs_a_digest():
    ref = ImageRef("127.0.0.1:5001/mlops/churn-serving", "v3", D1)
    assert ref.by_digest == f"127.0.0.1:5001/mlops/churn-serving@{D1}"
    assert ref.by_tag == "127.0.0.1:5001/mlops/churn-serving:v3"
    assert str(ref) == f"127.0.0.1:5001/mlops/churn-serving:v3@{D1}"
    with pytest.raises(ValueError, match="no digest"):
        _ = ImageRef("127.0.0.1:5001/mlops/churn-serving", "v3").by_digest
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        ref.digest = D2  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"repository": "127.0.0.1:5001/Mlops/churn"},  # upper case
        {"repository": "127.0.0.1:5001/mlops/-churn"},
        {"repository": "127.0.0.1:5001/"},
        {"repository": "a/b", "tag": "-bad"},
        {"repository": "a/b", "tag": "x" * 129},
        {"repository": "a/b", "digest": "sha256:abc"},
        {"repository": "a/b", "digest": "sha256:" + "A" * 64},
        {"repository": "a/b", "digest": "md5:" + "a" * 64},
    ],
)
def test_invalid_references_are_refused(kwargs):
    with pytest.raises(ValueError):
        ImageRef(**kwargs)


def test_serving_repository_and_tag_of_a_model_version():
    assert refs.serving_repository("churn", "127.0.0.1:5001") == "127.0.0.1:5001/mlops/churn-serving"
    assert refs.serving_repository("Breast_Cancer", "r.io") == "r.io/mlops/breast_cancer-serving"
    assert refs.repository_component("My Model!!v2") == "my-model-v2"
    assert refs.repository_component("a__b..c--d") == "a_b.c-d"
    assert refs.version_tag(12) == "v12" and refs.version_tag("3") == "v3"
    with pytest.raises(ValueError):
        refs.repository_component("!!!")
    with pytest.raises(ValueError):
        refs.version_tag("3/4")


def test_registry_url_scheme():
    assert refs.registry_base_url("127.0.0.1:5001") == "http://127.0.0.1:5001"
    assert refs.registry_base_url("localhost:5000") == "http://localhost:5000"
    assert refs.registry_base_url("registry.example.com") == "https://registry.example.com"
    assert (
        refs.registry_base_url("registry.example.com:5000", insecure=True)
        == "http://registry.example.com:5000"
    )
    assert refs.registry_base_url("127.0.0.1:5001", insecure=False) == "https://127.0.0.1:5001"


def test_digest_from_push_output():
    docker_like = [
        {"status": "The push refers to repository [r/x]"},
        {"status": "Pushed", "id": "abc"},
        {"status": f"v1: digest: {D1} size: 1234"},
        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": D1, "Size": 1234}},
    ]
    assert refs.digest_from_push_output(docker_like) == D1
    assert refs.digest_from_push_output([{"status": f"v1: digest: {D2} size: 9"}]) == D2
    assert refs.digest_from_push_output([{"status": "Copying blob"}, {"aux": {"Digest": "bogus"}}]) is None
    assert refs.digest_from_push_output([]) is None


# ------------------------------------------------------------------------------------------- locks


def test_lock_parsing_and_distribution_file_names():
    text = (
        "# comment\n"
        "numpy==2.4.6 \\\n    --hash=sha256:" + "1" * 64 + " \\\n    --hash=sha256:" + "2" * 64 + "\n"
        "    # via pandas\n"
        "Scikit_Learn==1.9.1 ; python_version >= '3.11' \\\n    --hash=sha256:" + "3" * 64 + "\n"
    )
    assert locks.parse_lock(text) == {"numpy": "2.4.6", "scikit-learn": "1.9.1"}
    assert locks.parse_lock_hashes(text)["numpy"] == ("2.4.6", frozenset({"1" * 64, "2" * 64}))
    assert locks.dist_of_file("scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.whl") == (
        "scikit-learn",
        "1.9.1",
    )
    assert locks.dist_of_file("antlr4-python3-runtime-4.9.3.tar.gz") == ("antlr4-python3-runtime", "4.9.3")
    assert locks.dist_of_file("README.md") is None and locks.dist_of_file(".keep") is None


def test_image_locks_pin_exactly_the_platform_lock_versions():
    platform = locks.parse_lock((REPO / "requirements.txt").read_text())
    serving = locks.parse_lock_hashes(locks.lock_file("serving").read_text())
    training = locks.parse_lock_hashes(locks.lock_file("training").read_text())
    for lock in (serving, training):
        assert {n: v for n, (v, _) in lock.items() if platform.get(n) != v} == {}
        assert all(hashes for _, hashes in lock.values()), "every pin is hash-checked"
        assert not {"apache-airflow", "mlflow", "great-expectations"} & set(lock), "no Airflow/MLflow server"
    assert set(serving) <= set(training), "the training venv starts from the serving dependency layer"
    assert {"mlflow-skinny", "scikit-learn", "uvicorn", "gunicorn", "orjson", "prometheus-client"} <= set(
        serving
    )
    assert {"pyarrow", "dvc"} <= set(training) - set(serving)
    for target in refs.TARGETS:  # every name of the .in file is pinned
        wanted = re.findall(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)", (locks.images_dir() / f"{target}.in").read_text(), re.M
        )
        assert {locks.normalize_dist(n) for n in wanted} <= set(training if target == "training" else serving)


def test_wheels_are_picked_from_the_cache_by_hash(tmp_path):
    good = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    good.write_bytes(b"the real wheel")
    (tmp_path / "demo_pkg-0.9-py3-none-any.whl").write_bytes(b"an older version")
    (tmp_path / "other-2.0.tar.gz").write_bytes(b"tampered sdist")
    pins = {
        "demo-pkg": ("1.0", frozenset({hashlib.sha256(b"the real wheel").hexdigest()})),
        "other": ("2.0", frozenset({"f" * 64})),
    }
    assert locks._pick_from_cache(tmp_path, pins) == {"demo-pkg": good}  # the tampered file is not used


def test_wheel_sets_split_serving_and_training():
    sets = locks.wheel_sets("training")
    assert sets["serving"] == locks.wheel_sets("serving")["serving"]
    assert not sets["serving"] & sets["training"] and "dvc" in sets["training"]


# ----------------------------------------------------------------------------------- build context


def test_build_args():
    args = context.build_args(
        "serving",
        model_name="churn",
        model_version="3",
        run_id="r1",
        base_image="b:1",
        source="s",
        revision="abc",
    )
    assert args == {
        "BASE_IMAGE": "b:1",
        "PIP_OFFLINE": "1",
        "SOURCE_URL": "s",
        "REVISION": "abc",
        "MODEL_NAME": "churn",
        "MODEL_VERSION": "3",
        "MODEL_RUN_ID": "r1",
    }
    training = context.build_args("training", offline=False, source="", revision="")
    assert training["PIP_OFFLINE"] == "0" and "MODEL_NAME" not in training
    assert training["BASE_IMAGE"] == refs.DEFAULT_BASE_IMAGE
    with pytest.raises(ValueError, match="model_name and model_version"):
        context.build_args("serving")
    with pytest.raises(ValueError, match="unknown target"):
        context.build_args("gpu")


def test_source_url_never_carries_credentials(monkeypatch):
    monkeypatch.setenv("MLOPS_IMAGE_SOURCE_URL", "https://user:token@git.example.com/org/mlops.git")
    assert context.source_url() == "https://git.example.com/org/mlops.git"


def _dockerfile_copy_sources(text: str) -> set[str]:
    sources = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        sources.update(parts[:-1])
    return sources


def test_serving_context_holds_what_the_dockerfile_copies_and_nothing_else(tmp_path):
    model = tmp_path / "downloaded"
    (model / "__pycache__").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "model.pkl").write_bytes(b"x")
    ctx = context.prepare_context(tmp_path / "ctx", "serving", model_dir=model, wheels=False)
    for src in _dockerfile_copy_sources((ctx / "Dockerfile").read_text()):
        assert (ctx / src).exists(), f"the Dockerfile copies {src}, missing from the context"
    assert (ctx / "model" / "MLmodel").is_file() and not (ctx / "model" / "__pycache__").exists()
    assert (ctx / "include" / "mlops" / "packaging" / "engine.py").is_file()
    assert not (ctx / "include" / "mlops" / "demo").exists(), "no image runs the demo"
    assert (ctx / "include" / "mlops" / "serving" / "app.py").is_file()
    top = {p.name for p in ctx.iterdir()}
    assert top == {"Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "include", "infra", "model"}
    assert not list(ctx.rglob("__pycache__")) and not list(ctx.rglob("*.pyc"))
    with pytest.raises(ValueError, match="not empty"):
        context.prepare_context(ctx, "serving", model_dir=model, wheels=False)
    with pytest.raises(ValueError, match="MLmodel missing"):
        context.prepare_context(tmp_path / "ctx2", "serving", model_dir=tmp_path, wheels=False)


def test_repository_root_is_a_valid_training_context():
    """`docker build --target training .` from a checkout: every COPY source exists in the repo."""
    for src in _dockerfile_copy_sources((REPO / "Dockerfile").read_text()) - {"model/"}:
        assert (REPO / src).exists(), src
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv*", ".mlops", "data"} <= set(ignored)
    assert not {"include", "infra", "pyproject.toml", "README.md"} & set(ignored)
    assert "include/mlops/demo" in ignored  # as prepare_context leaves it out


# -------------------------------------------------------------------------------------- Dockerfile


def _stages(text: str) -> dict[str, str]:
    heads = list(re.finditer(r"^FROM (\S+) AS (\S+)$", text, re.M))
    return {
        m.group(2): text[m.end() : heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        for i, m in enumerate(heads)
    }


def test_dockerfile_stages_users_labels_and_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert code.lstrip().startswith("ARG BASE_IMAGE="), "the base image is a build argument"
    stages = _stages(code)
    assert list(stages) == [
        "base",
        "deps-serving",
        "deps-training",
        "build-serving",
        "build-training",
        "serving",
        "training",
    ]
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS base$", code, re.M)
    for final in ("serving", "training"):
        body = stages[final]
        assert "USER 10001:10001" in body, f"{final} runs as root"
        assert "ENTRYPOINT" not in body, "the training backends replace the command: no ENTRYPOINT"
        assert f"COPY --from=build-{final} /opt/venv /opt/venv" in body
        for label in ("org.opencontainers.image.source", "org.opencontainers.image.revision"):
            assert label in body
    serving = stages["serving"]
    assert "io.mlops.model.name" in serving and "io.mlops.model.version" in serving
    assert "HEALTHCHECK" in serving and "/health" in serving and "curl" not in serving
    assert "--model-uri /opt/model" in serving and "MLOPS_SERVING_PORT=8000" in serving
    assert 'CMD ["python", "-m", "mlops.training"' in stages["training"]
    assert "--require-hashes" in stages["deps-serving"] and "--require-hashes" in stages["deps-training"]
    assert "RUN --mount" not in code and "kaniko" not in text.lower()


# -------------------------------------------------------------------------------------- the record


class FakeMlflowClient:
    """Stands in for MlflowClient: the two calls mlops.packaging.record makes."""

    def __init__(self):
        self.tags: dict[tuple[str, str], dict[str, str]] = {}

    def set_model_version_tag(self, name, version, key, value):
        assert isinstance(version, str)
        self.tags.setdefault((name, version), {})[key] = value

    def get_model_version(self, name, version):
        return type("MV", (), {"tags": dict(self.tags.get((name, str(version)), {}))})()


def test_record_image_writes_the_digest_reference_and_reads_it_back():
    client = FakeMlflowClient()
    ref = ImageRef("127.0.0.1:5001/mlops/churn-serving", "v3", D1)
    assert record.recorded_image(client, "churn", 3) is None
    written = record.record_image(client, "churn", 3, ref)
    assert (
        client.tags[("churn", "3")]
        == written
        == {
            "image": f"127.0.0.1:5001/mlops/churn-serving@{D1}",
            "image.digest": D1,
            "image.repository": "127.0.0.1:5001/mlops/churn-serving",
            "image.tag": "v3",
        }
    )
    assert record.recorded_image(client, "churn", "3") == ref
    with pytest.raises(ValueError, match="no digest"):
        record.record_image(client, "churn", 4, ImageRef("127.0.0.1:5001/mlops/churn-serving", "v4"))
    assert ("churn", "4") not in client.tags
    client.tags[("churn", "5")] = {"image": "127.0.0.1:5001/mlops/churn-serving:v5"}  # a tag, not a digest
    with pytest.raises(errors.ImageError, match="not a digest reference"):
        record.recorded_image(client, "churn", 5)


# ------------------------------------------------------------------------------- clear failures


def test_unreachable_engine_names_the_url_and_the_fix(tmp_path):
    url = f"unix://{tmp_path / 'no-engine.sock'}"
    with pytest.raises(errors.EngineUnreachable, match="no Docker-API engine answers at") as err:
        engine.engine(url)
    assert url in str(err.value) and "setup-podman.sh" in str(err.value)


def test_unreachable_registry_names_the_registry():
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(errors.RegistryUnreachable, match=re.escape(closed)):
        engine.check_registry(closed, timeout=2)
    with pytest.raises(errors.RegistryUnreachable):
        engine.registry_digest(ImageRef(f"{closed}/mlops/x", "v1"), timeout=2)


def test_build_and_push_refuses_a_backend_it_cannot_run():
    with pytest.raises(ValueError, match="in-cluster builds are not built"):
        engine.build_and_push("churn", 3, backend="kubernetes")


def test_build_error_carries_the_log_tail():
    err = errors.ImageBuildError("building x failed", "step 1\nstep 2: boom")
    assert err.log_tail.endswith("boom") and "last lines of the build log" in str(err)


# -------------------------------------------------------------------------------------- CI scripts


@pytest.mark.parametrize("script", [".ci/setup-podman.sh", "infra/images/make-base-image.sh"])
def test_setup_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / script)], check=True)


def test_setup_script_serves_the_registry_the_code_expects():
    text = (REPO / ".ci" / "setup-podman.sh").read_text()
    assert f"MLOPS_REGISTRY:-{refs.DEFAULT_REGISTRY}" in text
    assert "insecure = true" in text and "registries.conf.d" in text
    base = (REPO / "infra" / "images" / "make-base-image.sh").read_text()
    assert f"MLOPS_BASE_IMAGE:-{refs.DEFAULT_BASE_IMAGE}" in base
    assert "python3-venv" in base
    assert Path(REPO / "Dockerfile").read_text().count(f"ARG BASE_IMAGE={refs.DEFAULT_BASE_IMAGE}") == 1
