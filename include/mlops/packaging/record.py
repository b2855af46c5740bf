"""The image of a model version, recorded on it in the MLflow registry (version tags ``image.*``).

``image`` = ``repo@sha256:...`` is what a deployment runs; ``image.digest``, ``image.repository`` and
``image.tag`` (informative: tags move, digests do not) complete it. The tag keys are
:mod:`mlops.registry.tags`'.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from mlops.packaging.errors import ImageError
from mlops.packaging.refs import ImageRef, check_digest
from mlops.registry import tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["image_tags", "record_image", "recorded_image"]


def record_image(client: MlflowClient, name: str, version: str | int, ref: ImageRef) -> dict[str, str]:
    """Tag model version ``name``/``version`` with its image: ``image`` = ``repo@sha256:...``.

    Refuses a reference without a digest: what a deployment reads must be immutable.
    """
    written = image_tags(ref)
    for key, value in written.items():
        client.set_model_version_tag(name, str(version), key, value)
    return written


def image_tags(ref: ImageRef) -> dict[str, str]:
    """The model-version tags :func:`record_image` writes for ``ref`` (needs a digest)."""
    out = {
        tags.IMAGE: ref.by_digest,
        tags.IMAGE_DIGEST: check_digest(ref.digest or ""),
        tags.IMAGE_REPOSITORY: ref.repository,
    }
    if ref.tag:
        out[tags.IMAGE_TAG] = ref.tag
    return out


def recorded_image(client: MlflowClient, name: str, version: str | int) -> ImageRef | None:
    """The ImageRef recorded on a model version (by digest), None when no image was recorded."""
    mv_tags = client.get_model_version(name, str(version)).tags or {}
    if tags.IMAGE not in mv_tags:
        return None
    ref = ImageRef.parse(mv_tags[tags.IMAGE])
    if not ref.digest or ref.digest != mv_tags.get(tags.IMAGE_DIGEST, ref.digest):
        raise ImageError(
            f"model version {name}/{version}: tag {tags.IMAGE}={mv_tags[tags.IMAGE]!r} is not a digest reference"
        )
    return dataclasses.replace(ref, tag=mv_tags.get(tags.IMAGE_TAG))
