"""Container images of the platform: the serving image of a model version, and the training image.

The serving image of ``<model>`` version ``<v>`` has the model baked in (``/opt/model``), runs
``mlops serve`` on port 8000 and is pushed as ``<registry>/mlops/<model>-serving:v<v>``. Its digest
(``sha256:...`` of the manifest in the registry) is then recorded on the model version
(:func:`record_image`): deployments use ``repo@sha256:...``, never the mutable tag.

Two build backends:

``docker`` (:func:`build_and_push`)
    Any Docker Engine API: Docker, or Podman's ``podman system service`` (the default,
    ``unix:///run/podman/podman.sock``, from ``MLOPS_DOCKER_URL`` / ``Settings.docker_url``). The
    build context is assembled in a temporary folder (:func:`prepare_context`): the repository files
    the ``Dockerfile`` copies, the model downloaded from MLflow, and a wheelhouse of the image's lock
    (``infra/images/requirements-<target>.txt``, hash-checked) so the build itself needs no network.
``kubernetes`` (:func:`kubernetes_build_pod`)
    The manifest of a BuildKit rootless builder Pod (daemonless ``buildctl``, no privileged
    container, no Docker socket) that fetches a prepared context tarball, builds and pushes, and
    reports the digest in its termination message. **Not run in this project's CI** (there is no
    cluster here): only checked against the Kubernetes OpenAPI schemas in the unit tests.

This module never imports Airflow; the docker SDK and MLflow are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import defaults
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

REPO_ROOT = defaults.REPO_ROOT
IMAGES_DIR = REPO_ROOT / "infra" / "images"
#: The local registry .ci/setup-podman.sh serves (Debian's docker-registry, plain HTTP).
DEFAULT_REGISTRY = Settings.model_fields["image_registry"].default
#: The local Python base image .ci/setup-podman.sh makes (infra/images/make-base-image.sh).
DEFAULT_BASE_IMAGE = Settings.model_fields["base_image"].default
#: The training image of the docker backend (training.docker.image of the built-in model configs).
DEFAULT_TRAINING_IMAGE = "localhost/mlops-train:latest"
TARGETS = ("serving", "training")
#: Files and folders of the repository the Dockerfile copies (the rest never enters the context).
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
WHEELS_DIR = "infra/images/wheels"
MODEL_DIR = "model"

#: Model-version tags written by :func:`record_image`.
TAG_IMAGE = "image"  # repo@sha256:... : what a deployment runs
TAG_IMAGE_DIGEST = "image.digest"
TAG_IMAGE_REPOSITORY = "image.repository"
TAG_IMAGE_TAG = "image.tag"  # informative only: tags move, digests do not

#: Label keys (the Dockerfile sets them from build args).
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_MODEL_NAME = "io.mlops.model.name"
LABEL_MODEL_VERSION = "io.mlops.model.version"
LABEL_MODEL_RUN_ID = "io.mlops.model.run_id"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# a path component of a repository name (distribution spec): lower-case alnum with . _ __ - separators
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


# ------------------------------------------------------------------------------------------ errors


class ImageError(RuntimeError):
    """Building, pushing or recording an image failed; the message says what and what to do."""


class EngineUnreachable(ImageError):
    """No Docker-API engine answers at the configured URL."""


class RegistryUnreachable(ImageError):
    """The registry does not answer (or refuses) the Registry API."""


class ImageBuildError(ImageError):
    """The build failed; ``log_tail`` holds the last lines of the build output."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(
            f"{message}\n--- last lines of the build log ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


# ------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ImageRef:
    """An image in a registry: ``repository`` (with the registry host), ``tag``, manifest ``digest``."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        check_repository(self.repository)
        if self.tag is not None and not _TAG.match(self.tag):
            raise ValueError(f"invalid image tag {self.tag!r} (letters, digits, _ . -; at most 128)")
        if self.digest is not None and not _DIGEST.match(self.digest):
            raise ValueError(f"invalid digest {self.digest!r} (expected sha256:<64 lower-case hex>)")

    @property
    def by_digest(self) -> str:
        """``repo@sha256:...``: the immutable reference deployments use."""
        if not self.digest:
            raise ValueError(f"{self.by_tag}: no digest known (not pushed?)")
        return f"{self.repository}@{self.digest}"

    @property
    def by_tag(self) -> str:
        return f"{self.repository}:{self.tag or 'latest'}"

    @property
    def registry(self) -> str | None:
        """The registry host[:port] of the repository, None for a Docker Hub style short name."""
        return _split_host(self.repository)[0]

    @property
    def path(self) -> str:
        """The repository without the registry host (the ``<name>`` of the Registry API)."""
        return _split_host(self.repository)[1]

    def __str__(self) -> str:
        return (
            f"{self.repository}{':' + self.tag if self.tag else ''}{'@' + self.digest if self.digest else ''}"
        )

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """``[host[:port]/]path[:tag][@sha256:...]`` as an ImageRef (no implicit registry or tag)."""
        text = text.strip()
        digest = None
        if "@" in text:
            text, digest = text.rsplit("@", 1)
        tag = None
        last = text.rsplit("/", 1)[-1]
        if ":" in last:  # a colon after the last slash is the tag (one before it is a port)
            text, tag = text.rsplit(":", 1)
        return cls(text, tag, digest)


def _split_host(repository: str) -> tuple[str | None, str]:
    """(registry host or None, path): the first component is a host when it has a '.' or a ':' or
    is ``localhost`` (the Docker convention)."""
    first, sep, rest = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, repository


def check_repository(repository: str) -> str:
    """``repository`` if it is a valid ``[host[:port]/]component/...`` name, else ValueError."""
    host, path = _split_host(repository)
    comps = path.split("/")
    if host is not None and not _HOST.match(host):
        raise ValueError(f"invalid registry host {host!r} in {repository!r}")
    bad = [c for c in comps if not _COMPONENT.match(c)]
    if not comps or bad or len(repository) > 255:
        raise ValueError(
            f"invalid repository {repository!r}: path components must be lower-case letters and digits "
            f"separated by '.', '_', '__' or '-' (bad: {bad or comps})"
        )
    return repository


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"invalid digest {digest!r} (expected sha256:<64 lower-case hex>)")
    return digest


def repository_component(name: str) -> str:
    """A model name as a repository path component (lower case; other characters become '-')."""
    comp = re.sub(r"[^a-z0-9._-]+", "-", name.lower())
    comp = re.sub(r"[._-]*([._-])[._-]*", r"\1", comp).strip("._-")
    if not comp:
        raise ValueError(f"model name {name!r} has no character usable in an image name")
    return comp


def serving_repository(model_name: str, registry: str = DEFAULT_REGISTRY) -> str:
    """``<registry>/mlops/<model>-serving``: one repository per model, one tag per version."""
    return check_repository(f"{registry}/mlops/{repository_component(model_name)}-serving")


def version_tag(version: str | int) -> str:
    """``v<version>``: the (mutable, informative) tag of a model version's serving image."""
    tag = f"v{version}"
    if not _TAG.match(tag):
        raise ValueError(f"model version {version!r} does not make a valid image tag")
    return tag


def registry_base_url(registry: str, insecure: bool | None = None) -> str:
    """``http://`` for a loopback registry (or ``insecure=True``), ``https://`` otherwise."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    if insecure is None:
        insecure = host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")
    return f"{'http' if insecure else 'https'}://{registry}"


def digest_from_push_output(events: Iterable[dict[str, Any]]) -> str | None:
    """The manifest digest a push reports (Docker: ``aux.Digest``; else a ``digest: sha256:...`` line)."""
    found = None
    for ev in events:
        aux = ev.get("aux") if isinstance(ev, dict) else None
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str) and _DIGEST.match(aux["Digest"]):
            found = aux["Digest"]
            continue
        text = " ".join(str(ev.get(k, "")) for k in ("status", "stream")) if isinstance(ev, dict) else ""
        m = re.search(r"digest: (sha256:[0-9a-f]{64})", text)
        if m:
            found = m.group(1)
    return found


# --------------------------------------------------------------------------------- build arguments


def git_revision(repo: Path = REPO_ROOT) -> str:
    """The commit of ``repo`` (``<sha>-dirty`` with uncommitted changes), or "" without git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}-dirty" if dirty else sha


def source_url(repo: Path = REPO_ROOT) -> str:
    """``MLOPS_IMAGE_SOURCE_URL``, else the ``origin`` remote of ``repo`` (credentials stripped), else ""."""
    url = os.environ.get("MLOPS_IMAGE_SOURCE_URL", "")
    if not url:
        try:
            url = subprocess.run(
                ["git", "remote", "get-url", "origin"], cwd=repo, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            url = ""
    return re.sub(r"^(\w+://)[^/@]+@", r"\1", url)


def build_args(
    target: str,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    run_id: str | None = None,
    base_image: str | None = None,
    source: str | None = None,
    revision: str | None = None,
    offline: bool = True,
) -> dict[str, str]:
    """The ``--build-arg`` values of a build (labels and env of the image come from these)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    args = {
        "BASE_IMAGE": base_image or default_base_image(),
        "PIP_OFFLINE": "1" if offline else "0",
        "SOURCE_URL": source if source is not None else source_url(),
        "REVISION": revision if revision is not None else git_revision(),
    }
    if target == "serving":
        if not model_name or model_version is None:
            raise ValueError("the serving image needs model_name and model_version")
        args.update(MODEL_NAME=model_name, MODEL_VERSION=str(model_version), MODEL_RUN_ID=run_id or "")
    return args


def default_base_image() -> str:
    return Settings().base_image


def default_registry() -> str:
    return Settings().image_registry


def default_docker_url() -> str:
    """``Settings.docker_url`` (``MLOPS_DOCKER_URL``, default Podman's socket)."""
    from mlops.settings import get_settings

    return get_settings().docker_url


# ----------------------------------------------------------------------------------------- context


_REQ_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize_dist(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, str]:
    """``{normalised name: version}`` of a ``uv pip compile`` lock (``name==version`` lines)."""
    return {name: version for name, (version, _) in parse_lock_hashes(text).items()}


def parse_lock_hashes(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``{normalised name: (version, {sha256 hex, ...})}`` of a lock made with ``--generate-hashes``."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        m = _REQ_LINE.match(stripped)
        if m:
            current = normalize_dist(m.group(1))
            pins[current] = (m.group(2), set())
        elif stripped and not stripped.startswith(("--hash=", "#")):
            current = None  # another option line: hashes that follow are not this pin's
        if current:
            pins[current][1].update(re.findall(r"--hash=sha256:([0-9a-f]{64})", stripped))
    return {k: (v, frozenset(h)) for k, (v, h) in pins.items()}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pick_from_cache(cache: Path, pins: dict[str, tuple[str, frozenset[str]]]) -> dict[str, Path]:
    """One file per pin whose sha256 is one of the lock's hashes for it (a wheel before an sdist)."""
    picked: dict[str, Path] = {}
    for f in sorted(cache.iterdir(), key=lambda p: (p.suffix != ".whl", p.name)):
        dist = dist_of_file(f.name)
        if not dist or dist[0] in picked or dist[0] not in pins or pins[dist[0]][0] != dist[1]:
            continue
        if _sha256_file(f) in pins[dist[0]][1]:
            picked[dist[0]] = f
    return picked


def dist_of_file(filename: str) -> tuple[str, str] | None:
    """(normalised name, version) of a wheel or sdist file name, None for anything else."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (normalize_dist(parts[0]), parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            name, sep, version = filename[: -len(ext)].rpartition("-")
            return (normalize_dist(name), version) if sep else None
    return None


def lock_file(target: str) -> Path:
    return IMAGES_DIR / f"requirements-{target}.txt"


def wheel_sets(target: str) -> dict[str, frozenset[str]]:
    """Which pins go in which wheelhouse folder: ``serving`` (the serving lock; the shared dependency
    layer of both images) and, for training, ``training`` (the rest of the training lock)."""
    serving = frozenset(parse_lock(lock_file("serving").read_text()))
    if target == "serving":
        return {"serving": serving}
    if target == "training":
        return {
            "serving": serving,
            "training": frozenset(parse_lock(lock_file("training").read_text())) - serving,
        }
    raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")


def download_wheels(target: str, dest: Path, cache: Path | None = None, timeout: float = 900) -> list[Path]:
    """The distributions of ``target``'s lock in ``dest/<set>/`` (see :func:`wheel_sets`), each file
    checked against the lock's hashes.

    Downloaded once into ``cache`` (default ``$MLOPS_HOME/image-wheels``) by ``pip download
    --require-hashes``; later builds find them there (sha256 checked again, no pip, no network) and
    hard-link (or copy) them into ``dest``. An sdist-only package stays an sdist (the builder builds it).
    """
    lock = lock_file(target)
    pins = parse_lock_hashes(lock.read_text())
    if not all(hashes for _, hashes in pins.values()):
        raise ImageError(f"{lock} has pins without --hash lines: regenerate it with --generate-hashes")
    if cache is None:
        from mlops.settings import get_settings

        cache = get_settings().home / "image-wheels"
    cache.mkdir(parents=True, exist_ok=True)
    picked = _pick_from_cache(cache, pins)
    if set(picked) != set(pins):  # something missing: pip fetches it (and checks every hash again)
        import importlib.util

        if importlib.util.find_spec("pip") is None:
            raise ImageError(
                f"{len(set(pins) - set(picked))} files of {lock.name} are not in {cache} and this Python "
                f"({sys.executable}) has no pip to download them; install pip, or build with wheels=False "
                "(PIP_OFFLINE=0: the build fetches them from PyPI)"
            )
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-deps", "--require-hashes", "-r", str(lock), "-d", str(cache)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ImageError(
                f"downloading the wheels of {lock.name} failed (pip exit {proc.returncode}): "
                f"{_tail(proc.stderr or proc.stdout, 15)}"
            )
        picked = _pick_from_cache(cache, pins)
    missing = sorted(set(pins) - set(picked))
    if missing:
        raise ImageError(f"no file matching the hashes of {lock.name} for {missing} in {cache}")
    out = []
    for folder, names in wheel_sets(target).items():
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for dist in sorted(names):
            f = picked[dist]
            target_path = dest / folder / f.name
            try:
                os.link(f, target_path)
            except OSError:
                shutil.copy2(f, target_path)
            out.append(target_path)
    return out


def prepare_context(
    dest: Path,
    target: str,
    *,
    model_dir: Path | None = None,
    wheels: bool = True,
    wheel_cache: Path | None = None,
) -> Path:
    """A build context for ``target`` in ``dest`` (empty or missing): see the Dockerfile's header.

    Only what the Dockerfile copies: ``Dockerfile``, ``.dockerignore``, ``pyproject.toml``,
    ``README.md``, ``include/`` (no caches), the image locks, the wheelhouse of the target's lock
    (:func:`download_wheels`; ``wheels=False``: empty folders, build with ``PIP_OFFLINE=0`` then)
    and, for serving, ``model_dir`` as ``model/``.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if target == "serving" and (model_dir is None or not (Path(model_dir) / "MLmodel").is_file()):
        raise ValueError(f"the serving context needs an MLflow model folder (MLmodel missing in {model_dir})")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"build context folder {dest} is not empty")
    for name in CONTEXT_FILES:
        shutil.copy2(REPO_ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO_ROOT / "include", dest / "include", ignore=ignore)
    locks = dest / "infra" / "images"
    locks.mkdir(parents=True)
    for t in TARGETS:
        shutil.copy2(lock_file(t), locks / lock_file(t).name)
    for folder in ("serving", "training"):  # both exist (the Dockerfile copies both), maybe empty
        (dest / WHEELS_DIR / folder).mkdir(parents=True)
    if wheels:
        download_wheels(target, dest / WHEELS_DIR, cache=wheel_cache)
    if target == "serving":
        shutil.copytree(model_dir, dest / MODEL_DIR, ignore=ignore)
    return dest


def download_model(
    name: str, version: str | int, dst: Path, tracking_uri: str | None = None
) -> tuple[Path, Any]:
    """The files of ``models:/<name>/<version>`` in ``dst`` and the model version (MLflow entity)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    mv = MlflowClient(tracking_uri=tracking_uri).get_model_version(name, str(version))
    path = download_artifacts(
        artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(dst), tracking_uri=tracking_uri
    )
    if not (Path(path) / "MLmodel").is_file():
        raise ImageError(f"models:/{name}/{version} downloaded to {path} holds no MLmodel file")
    return Path(path), mv


# ------------------------------------------------------------------------------ engine and registry


def engine(docker_url: str | None = None, timeout: int = 900) -> Any:
    """A low-level docker SDK client (``docker.APIClient``) that answered ``_ping``.

    ``timeout`` bounds every socket read, so it must exceed the longest silent build step.
    """
    import docker

    url = docker_url or default_docker_url()
    try:
        api = docker.APIClient(base_url=url, version="auto", timeout=timeout)
        api.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, FileNotFoundError, ...
        raise EngineUnreachable(
            f"no Docker-API engine answers at {url} ({type(exc).__name__}: {exc}). Start one (as root: "
            "`bash .ci/setup-podman.sh` serves Podman's) or set MLOPS_DOCKER_URL."
        ) from exc
    return api


def check_registry(registry: str, insecure: bool | None = None, timeout: float = 10) -> str:
    """The registry's base URL once ``GET /v2/`` answers (200, or 401 = reachable, needs login)."""
    import httpx

    base = registry_base_url(registry, insecure)
    try:
        resp = httpx.get(f"{base}/v2/", timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        raise RegistryUnreachable(
            f"registry {registry} unreachable at {base}/v2/ ({type(exc).__name__}: {exc}). "
            "The local one: `bash .ci/setup-podman.sh` (127.0.0.1:5001); another: MLOPS_IMAGE_REGISTRY."
        ) from exc
    if resp.status_code not in (200, 401):
        raise RegistryUnreachable(f"{base}/v2/ answered {resp.status_code}: not a Docker/OCI registry?")
    return base


def registry_digest(ref: ImageRef, insecure: bool | None = None, timeout: float = 10) -> str:
    """The digest the registry holds for ``ref``'s tag (``HEAD /v2/<name>/manifests/<tag>``)."""
    import httpx

    if not ref.registry:
        raise ValueError(f"{ref.repository}: no registry host in the repository name")
    base = registry_base_url(ref.registry, insecure)
    url = f"{base}/v2/{ref.path}/manifests/{ref.tag or 'latest'}"
    try:
        resp = httpx.head(
            url, headers={"Accept": ", ".join(_MANIFEST_TYPES)}, timeout=timeout, trust_env=False
        )
    except httpx.HTTPError as exc:
        raise RegistryUnreachable(f"registry unreachable at {url} ({type(exc).__name__}: {exc})") from exc
    if resp.status_code in (401, 403):
        raise RegistryUnreachable(f"HEAD {url} answered {resp.status_code}: the registry wants credentials")
    if resp.status_code != 200:
        raise ImageError(f"HEAD {url} answered {resp.status_code}: {ref.by_tag} is not in the registry")
    return check_digest(resp.headers.get("Docker-Content-Digest", ""))


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _build_stream(api: Any, context: Path, tag: str, target: str, args: dict[str, str], offline: bool):
    return api.build(
        path=str(context),
        tag=tag,
        target=target,
        buildargs=args,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
        # hermetic when the wheelhouse is complete: RUN steps get no network at all
        network_mode="none" if offline else None,
    )


def build_image(
    api: Any, context: Path, *, tag: str, target: str, args: dict[str, str], offline: bool = True
) -> dict[str, Any]:
    """Build ``target`` of the context's Dockerfile as ``tag``; returns the engine's image inspect.

    Raises :class:`ImageBuildError` with the tail of the build log when a step fails.
    """
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        for ev in _build_stream(api, context, tag, target, args, offline):
            if "stream" in ev:
                lines.extend(str(ev["stream"]).splitlines())
            if "error" in ev or "errorDetail" in ev:
                detail = (
                    ev.get("errorDetail", {}).get("message")
                    if isinstance(ev.get("errorDetail"), dict)
                    else None
                )
                raise ImageBuildError(
                    f"building {tag} ({target}) failed: {detail or ev.get('error')}", _tail("\n".join(lines))
                )
    except ImageBuildError:
        raise
    except Exception as exc:  # the engine dropped the stream (timeout, crash, API error)
        raise ImageBuildError(
            f"building {tag} ({target}) failed: {type(exc).__name__}: {exc}", _tail("\n".join(lines))
        ) from exc
    try:
        info = api.inspect_image(tag)
    except Exception as exc:  # noqa: BLE001
        raise ImageBuildError(
            f"the build of {tag} ended but the image is missing ({exc})", _tail("\n".join(lines))
        ) from exc
    log.info("built %s (%s) in %.1fs: %s", tag, target, time.monotonic() - t0, info.get("Id"))
    return info


def push_image(
    api: Any, ref: ImageRef, insecure: bool | None = None, auth_config: dict | None = None
) -> ImageRef:
    """Push ``ref.by_tag``; returns ``ref`` with the digest the registry holds for the tag.

    The digest is read back from the registry (``Docker-Content-Digest``); when the engine also
    reports one, both must agree.
    """
    events = []
    try:
        for ev in api.push(ref.repository, tag=ref.tag, stream=True, decode=True, auth_config=auth_config):
            events.append(ev)
            if "error" in ev or "errorDetail" in ev:
                raise RegistryUnreachable(
                    f"pushing {ref.by_tag} failed: {ev.get('error') or ev.get('errorDetail')}"
                )
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RegistryUnreachable(f"pushing {ref.by_tag} failed: {type(exc).__name__}: {exc}") from exc
    reported = digest_from_push_output(events)
    held = registry_digest(ref, insecure)
    if reported and reported != held:
        raise ImageError(
            f"the engine pushed {ref.by_tag} as {reported} but the registry holds {held} for the tag "
            "(pushed concurrently by someone else?)"
        )
    return dataclasses.replace(ref, digest=held)


# ------------------------------------------------------------------------------------------- build


def build_and_push(
    name: str,
    version: str | int,
    *,
    tracking_uri: str | None = None,
    registry: str | None = None,
    backend: str = "docker",
    docker_url: str | None = None,
    base_image: str | None = None,
    insecure: bool | None = None,
    wheels: bool = True,
    wheel_cache: Path | None = None,
    source: str | None = None,
    revision: str | None = None,
) -> ImageRef:
    """Build the serving image of model version ``name``/``version`` and push it; returns its ImageRef.

    The model is downloaded from MLflow (``models:/<name>/<version>``) into a fresh build context,
    baked into the image at ``/opt/model``, and the image pushed as
    ``<registry>/mlops/<name>-serving:v<version>``; the returned ``ImageRef.digest`` is the digest
    the registry holds. Record it with :func:`record_image`. Engine and registry are checked before
    anything is downloaded or built. ``backend="kubernetes"``: see :func:`kubernetes_build_pod`.
    """
    if backend != "docker":
        raise ValueError(
            f"build backend {backend!r} cannot run here: 'docker' builds through a Docker-API engine; "
            "on Kubernetes create the Pod of kubernetes_build_pod() (BuildKit rootless) instead"
        )
    registry = registry or default_registry()
    ref = ImageRef(serving_repository(name, registry), version_tag(version))
    api = engine(docker_url)
    times: dict[str, float] = {}
    t = time.monotonic()
    try:
        check_registry(registry, insecure)
        with tempfile.TemporaryDirectory(prefix="mlops-image-") as tmp:
            model_path, mv = download_model(name, version, Path(tmp) / "download", tracking_uri)
            times["model"], t = time.monotonic() - t, time.monotonic()
            context = prepare_context(
                Path(tmp) / "context", "serving", model_dir=model_path, wheels=wheels, wheel_cache=wheel_cache
            )
            times["context"], t = time.monotonic() - t, time.monotonic()
            args = build_args(
                "serving",
                model_name=name,
                model_version=str(mv.version),
                run_id=mv.run_id,
                base_image=base_image,
                source=source,
                revision=revision,
                offline=wheels,
            )
            build_image(api, context, tag=ref.by_tag, target="serving", args=args, offline=wheels)
            times["build"], t = time.monotonic() - t, time.monotonic()
        pushed = push_image(api, ref, insecure)
        times["push"] = time.monotonic() - t
    finally:
        api.close()
    log.info("pushed %s (%s)", pushed, ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    return pushed


def build_training_image(
    tag: str = DEFAULT_TRAINING_IMAGE,
    *,
    push: bool = False,
    docker_url: str | None = None,
    base_image: str | None = None,
    insecure: bool | None = None,
    wheels: bool = True,
    wheel_cache: Path | None = None,
) -> ImageRef:
    """Build the training image (default ``localhost/mlops-train:latest``, the docker backend's),
    push it when ``push`` (its digest is then known)."""
    ref = ImageRef.parse(tag)
    if ref.digest:
        raise ValueError(f"{tag}: give a tag to build, not a digest")
    ref = dataclasses.replace(ref, tag=ref.tag or "latest")
    api = engine(docker_url)
    try:
        if push and ref.registry:
            check_registry(ref.registry, insecure)
        with tempfile.TemporaryDirectory(prefix="mlops-image-") as tmp:
            context = prepare_context(
                Path(tmp) / "context", "training", wheels=wheels, wheel_cache=wheel_cache
            )
            args = build_args("training", base_image=base_image, offline=wheels)
            build_image(api, context, tag=ref.by_tag, target="training", args=args, offline=wheels)
        if push:
            ref = push_image(api, ref, insecure)
    finally:
        api.close()
    return ref


# ---------------------------------------------------------------------------------------- registry


def record_image(client: MlflowClient, name: str, version: str | int, ref: ImageRef) -> dict[str, str]:
    """Tag model version ``name``/``version`` with its image: ``image`` = ``repo@sha256:...``.

    Refuses a reference without a digest: what a deployment reads must be immutable.
    """
    tags = image_tags(ref)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    return tags


def image_tags(ref: ImageRef) -> dict[str, str]:
    """The model-version tags :func:`record_image` writes for ``ref`` (needs a digest)."""
    tags = {
        TAG_IMAGE: ref.by_digest,
        TAG_IMAGE_DIGEST: check_digest(ref.digest or ""),
        TAG_IMAGE_REPOSITORY: ref.repository,
    }
    if ref.tag:
        tags[TAG_IMAGE_TAG] = ref.tag
    return tags


def recorded_image(client: MlflowClient, name: str, version: str | int) -> ImageRef | None:
    """The ImageRef recorded on a model version (by digest), None when no image was recorded."""
    tags = client.get_model_version(name, str(version)).tags or {}
    if TAG_IMAGE not in tags:
        return None
    ref = ImageRef.parse(tags[TAG_IMAGE])
    if not ref.digest or ref.digest != tags.get(TAG_IMAGE_DIGEST, ref.digest):
        raise ImageError(
            f"model version {name}/{version}: tag {TAG_IMAGE}={tags[TAG_IMAGE]!r} is not a digest reference"
        )
    return dataclasses.replace(ref, tag=tags.get(TAG_IMAGE_TAG))


# -------------------------------------------------------------------------------------- kubernetes

#: BuildKit's rootless image (daemonless ``buildctl``). Pin it by digest in a real cluster.
BUILDKIT_IMAGE = "docker.io/moby/buildkit:v0.16.0-rootless"
#: uid/gid the rootless BuildKit image is made for (its ``user``); changing it needs a rebuilt image.
BUILDKIT_UID = 1000
_K8S_NAME = re.compile(r"[^a-z0-9-]+")

#: Init container script: fetch the context tarball, check its sha256, unpack it into /workspace.
#: (BusyBox applets of the Alpine-based BuildKit image: wget, sha256sum, tar.)
FETCH_CONTEXT_SCRIPT = (
    'set -eu; wget -q -O /tmp/context.tar.gz "$CONTEXT_URL"; '
    'if [ -n "${CONTEXT_SHA256:-}" ]; then echo "$CONTEXT_SHA256  /tmp/context.tar.gz" | sha256sum -c -; fi; '
    "tar -xzf /tmp/context.tar.gz -C /workspace; rm -f /tmp/context.tar.gz; ls -la /workspace"
)


def kubernetes_build_pod(
    ref: ImageRef,
    *,
    context_url: str,
    context_sha256: str | None = None,
    target: str = "serving",
    build_arguments: dict[str, str] | None = None,
    namespace: str = "mlops",
    name: str | None = None,
    builder_image: str = BUILDKIT_IMAGE,
    registry_secret: str | None = None,
    insecure_registry: bool = False,
    service_account: str | None = None,
    cpu: str = "2",
    memory: str = "4Gi",
    deadline_seconds: int = 1800,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Pod (a plain dict) that builds ``target`` and pushes it as ``ref.by_tag`` on Kubernetes.

    **Not run here** (no cluster in this project's CI): the manifest is only validated against the
    Kubernetes OpenAPI schemas by the unit tests; a real run is for a cluster's CI.

    - ``context_url``: an HTTP(S) URL of the build context as a ``.tar.gz`` (what
      :func:`prepare_context` makes, e.g. uploaded to object storage with a pre-signed URL);
      ``context_sha256`` (hex) is checked before unpacking when given.
    - The build runs daemonless BuildKit in *rootless* mode (``buildctl-daemonless.sh``,
      ``--oci-worker-no-process-sandbox``): no privileged container, no host socket; like BuildKit's
      own rootless example it needs seccomp and AppArmor ``Unconfined`` (a "baseline"-level Pod, not
      "restricted"). Kaniko is not used (archived).
    - The base image (``build_arguments["BASE_IMAGE"]``) must be pullable from the cluster.
    - ``registry_secret``: a ``kubernetes.io/dockerconfigjson`` Secret used for the push.
    - The result: ``buildctl --metadata-file /dev/termination-log`` makes the build metadata (JSON
      with ``containerimage.digest``) the container's termination message; read the digest with
      :func:`digest_from_build_metadata` from ``status.containerStatuses[0].state.terminated.message``.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if not re.match(r"^https?://", context_url):
        raise ValueError(f"context_url must be an http(s) URL of a .tar.gz, got {context_url!r}")
    if context_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", context_sha256):
        raise ValueError(f"context_sha256 must be 64 lower-case hex digits, got {context_sha256!r}")
    if name is None:
        stem = _K8S_NAME.sub("-", f"build-{ref.path.rsplit('/', 1)[-1]}-{ref.tag or 'latest'}".lower())
        suffix = hashlib.sha256(f"{ref.by_tag}|{context_url}".encode()).hexdigest()[:6]
        name = f"{stem.strip('-')[:55].rstrip('-')}-{suffix}"
    home = "/home/user"
    output = f"type=image,name={ref.by_tag},push=true"
    if insecure_registry:
        output += ",registry.insecure=true"
    args = ["build", "--frontend", "dockerfile.v0"]
    args += ["--local", "context=/workspace", "--local", "dockerfile=/workspace", "--opt", f"target={target}"]
    for key, value in sorted((build_arguments or {}).items()):
        args += ["--opt", f"build-arg:{key}={value}"]
    args += ["--output", output, "--metadata-file", "/dev/termination-log"]
    unconfined = {"seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}}
    env = [{"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}]
    mounts = [
        {"name": "workspace", "mountPath": "/workspace", "readOnly": True},
        {"name": "buildkit-state", "mountPath": f"{home}/.local/share/buildkit"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "emptyDir": {"sizeLimit": "4Gi"}},
        {"name": "buildkit-state", "emptyDir": {"sizeLimit": "20Gi"}},
    ]
    if registry_secret:
        env.append({"name": "DOCKER_CONFIG", "value": f"{home}/.docker"})
        mounts.append({"name": "registry-auth", "mountPath": f"{home}/.docker", "readOnly": True})
        volumes.append(
            {
                "name": "registry-auth",
                "secret": {
                    "secretName": registry_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    fetch_env = [{"name": "CONTEXT_URL", "value": context_url}]
    if context_sha256:
        fetch_env.append({"name": "CONTEXT_SHA256", "value": context_sha256})
    meta_labels = {
        "app.kubernetes.io/part-of": "mlops",
        "app.kubernetes.io/component": "image-build",
        "mlops/target": target,
        **(labels or {}),
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline_seconds,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": BUILDKIT_UID,
            "runAsGroup": BUILDKIT_UID,
            "fsGroup": BUILDKIT_UID,
        },
        "initContainers": [
            {
                "name": "fetch-context",
                "image": builder_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", FETCH_CONTEXT_SCRIPT],
                "env": fetch_env,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
            }
        ],
        "containers": [
            {
                "name": "buildkit",
                "image": builder_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["buildctl-daemonless.sh"],
                "args": args,
                "env": env,
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"cpu": cpu, "memory": memory},
                },
                "securityContext": unconfined,
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": meta_labels,
            "annotations": {"mlops/image": ref.by_tag},
        },
        "spec": spec,
    }


def digest_from_build_metadata(message: str) -> str:
    """The image digest in BuildKit's ``--metadata-file`` JSON (the builder Pod's termination message)."""
    try:
        meta = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ImageError(
            f"the builder's termination message is not BuildKit metadata JSON: {message[:200]!r}"
        ) from exc
    digest = meta.get("containerimage.digest") if isinstance(meta, dict) else None
    if not digest:
        raise ImageError(
            f"no containerimage.digest in the build metadata: {sorted(meta) if isinstance(meta, dict) else meta!r}"
        )
    return check_digest(digest)


def context_tarball(context: Path, dest: Path) -> str:
    """``context`` as a reproducible ``.tar.gz`` at ``dest`` (sorted, owner 0, mtime 0); its sha256.

    The upload of the tarball (somewhere the cluster can fetch ``context_url`` from) is the caller's.
    """
    import gzip
    import tarfile

    def reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _walk_sorted(context):
            tar.add(path, arcname=str(path.relative_to(context)), recursive=False, filter=reset)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def _walk_sorted(root: Path) -> Iterator[Path]:
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk_sorted(entry)


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops.images serving --model churn --version 3`` | ``training [--tag ...]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m mlops.images", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serving", help="build + push the serving image of a model version, record its digest")
    s.add_argument("--model", required=True)
    s.add_argument("--version", required=True, help="model version number (or @alias, e.g. @champion)")
    s.add_argument(
        "--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, then the local stack)"
    )
    s.add_argument("--registry", help=f"default MLOPS_IMAGE_REGISTRY, then {DEFAULT_REGISTRY}")
    s.add_argument("--no-record", action="store_true", help="do not tag the model version")
    t = sub.add_parser("training", help="build the training image (the docker backend's)")
    t.add_argument("--tag", default=DEFAULT_TRAINING_IMAGE)
    t.add_argument("--push", action="store_true")
    for a in (s, t):
        a.add_argument("--docker-url", help="Docker-API engine (default MLOPS_DOCKER_URL)")
        a.add_argument("--base-image", help=f"default MLOPS_BASE_IMAGE, then {DEFAULT_BASE_IMAGE}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "training":
            ref = build_training_image(
                args.tag, push=args.push, docker_url=args.docker_url, base_image=args.base_image
            )
            print(json.dumps({"image": str(ref)}))
            return 0
        from mlflow import MlflowClient

        tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            from mlops.settings import get_settings

            tracking_uri = get_settings().tracking_uri
        client = MlflowClient(tracking_uri=tracking_uri)
        version = args.version
        if version.startswith("@"):
            version = client.get_model_version_by_alias(args.model, version[1:]).version
        ref = build_and_push(
            args.model,
            version,
            tracking_uri=tracking_uri,
            registry=args.registry,
            docker_url=args.docker_url,
            base_image=args.base_image,
        )
        if not args.no_record:
            record_image(client, args.model, version, ref)
        print(
            json.dumps(
                {"model": args.model, "version": str(version), "image": ref.by_digest, "tag": ref.by_tag}
            )
        )
        return 0
    except (ImageError, ValueError) as exc:
        print(f"mlops images: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
