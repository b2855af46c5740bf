"""Images: build, push and digest record of the serving and training images.

``refs`` (:class:`~mlops.packaging.refs.ImageRef`, image names, digests), ``locks`` (the image locks
and their wheelhouse), ``context`` (build context and build arguments), ``engine`` (build and push
through a Docker-API engine), ``record`` (the ``image.*`` tags of a model version); ``python -m mlops.packaging`` builds from the
command line.

The names below are what the DAGs use; they are imported on first use, so importing this package
stays cheap (the build modules load pydantic-settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.packaging.engine import build_and_push
    from mlops.packaging.record import record_image

__all__ = ["build_and_push", "record_image"]

_HOME = {"build_and_push": "mlops.packaging.engine", "record_image": "mlops.packaging.record"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
