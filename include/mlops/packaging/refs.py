"""Image references: :class:`ImageRef` (repository, tag, digest), the names of the platform's images
(registry, base image, serving and training images), registry URLs and the digest a push reports.

The serving image of ``<model>`` version ``<v>`` is ``<registry>/mlops/<model>-serving:v<v>``; what
deployments run is its digest reference ``repo@sha256:...`` (a tag is mutable, a digest is not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlops.config.settings import Settings

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_REGISTRY",
    "DEFAULT_TRAINING_IMAGE",
    "TARGETS",
    "ImageRef",
    "check_digest",
    "check_repository",
    "check_target",
    "default_base_image",
    "default_registry",
    "digest_from_push_output",
    "registry_base_url",
    "repository_component",
    "serving_repository",
    "version_tag",
]

#: The local registry .ci/setup-podman.sh serves (Debian's docker-registry, plain HTTP).
DEFAULT_REGISTRY = Settings.model_fields["image_registry"].default
#: The local Python base image .ci/setup-podman.sh makes (infra/images/make-base-image.sh).
DEFAULT_BASE_IMAGE = Settings.model_fields["base_image"].default
#: The training image of the docker backend (training.docker.image of the built-in model configs).
DEFAULT_TRAINING_IMAGE = "localhost/mlops-train:latest"
#: The images the Dockerfile builds (its final stages).
TARGETS = ("serving", "training")

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# a path component of a repository name (distribution spec): lower-case alnum with . _ __ - separators
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


def check_target(target: str) -> str:
    """``target`` if it is one of :data:`TARGETS`, else ValueError."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    return target


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
        """``repo:tag`` (``latest`` without a tag): the mutable reference."""
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
    """``digest``, if it is ``sha256:`` and 64 lower-case hex digits; a ValueError otherwise."""
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


def default_registry() -> str:
    """``Settings.image_registry`` (``MLOPS_IMAGE_REGISTRY``, default :data:`DEFAULT_REGISTRY`)."""
    return Settings().image_registry


def default_base_image() -> str:
    """``Settings.base_image`` (``MLOPS_BASE_IMAGE``, default :data:`DEFAULT_BASE_IMAGE`)."""
    return Settings().base_image


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
