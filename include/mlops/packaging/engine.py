"""Build and push through any Docker Engine API: Docker, or Podman's ``podman system service``.

The engine's URL is ``MLOPS_DOCKER_URL`` / ``Settings.docker_url`` (default Podman's socket,
``unix:///run/podman/podman.sock``). :func:`build_and_push` builds the serving image of a model version
and pushes it; the digest returned is the one the registry holds (read back with the Registry API).
:func:`build_training_image` builds the training image of the docker backend.

The docker SDK, httpx and MLflow are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops.packaging.context import build_args, download_model, prepare_context
from mlops.packaging.errors import (
    EngineUnreachable,
    ImageBuildError,
    ImageError,
    RegistryUnreachable,
    log_tail,
)
from mlops.packaging.refs import (
    DEFAULT_TRAINING_IMAGE,
    ImageRef,
    check_digest,
    default_registry,
    digest_from_push_output,
    registry_base_url,
    serving_repository,
    version_tag,
)

__all__ = [
    "build_and_push",
    "build_image",
    "build_training_image",
    "check_registry",
    "default_docker_url",
    "engine",
    "push_image",
    "registry_digest",
]

log = logging.getLogger(__name__)

_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def default_docker_url() -> str:
    """``Settings.docker_url`` (``MLOPS_DOCKER_URL``, default Podman's socket)."""
    from mlops.config.settings import get_settings

    return get_settings().docker_url


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
                    f"building {tag} ({target}) failed: {detail or ev.get('error')}",
                    log_tail("\n".join(lines)),
                )
    except ImageBuildError:
        raise
    except Exception as exc:  # the engine dropped the stream (timeout, crash, API error)
        raise ImageBuildError(
            f"building {tag} ({target}) failed: {type(exc).__name__}: {exc}", log_tail("\n".join(lines))
        ) from exc
    try:
        info = api.inspect_image(tag)
    except Exception as exc:  # noqa: BLE001
        raise ImageBuildError(
            f"the build of {tag} ended but the image is missing ({exc})", log_tail("\n".join(lines))
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
    anything is downloaded or built. Only ``backend="docker"`` exists: in-cluster builds (a
    BuildKit pod) are not built yet; a cluster's workers reach a Docker-API engine via ``DOCKER_HOST``.
    """
    if backend != "docker":
        raise ValueError(
            f"build backend {backend!r}: in-cluster builds are not built yet; 'docker' builds through a "
            "Docker-API engine (DOCKER_HOST), which the workers of a cluster can reach too"
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
