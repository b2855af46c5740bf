"""The build context of an image and its build arguments.

:func:`prepare_context` assembles, in a temporary folder, only what the ``Dockerfile`` copies: the
repository files, the image locks and their wheelhouse (:mod:`mlops.packaging.locks`) and, for the
serving image, the model downloaded from MLflow (:func:`download_model`). :func:`build_args` are the
``--build-arg`` values (labels and environment of the image come from them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mlops.packaging.errors import ImageError
from mlops.packaging.locks import download_wheels, lock_file, source_root
from mlops.packaging.refs import TARGETS, check_target, default_base_image

__all__ = [
    "CONTEXT_FILES",
    "MODEL_DIR",
    "WHEELS_DIR",
    "build_args",
    "download_model",
    "git_revision",
    "prepare_context",
    "source_url",
]

#: Files and folders of the repository the Dockerfile copies (the rest never enters the context).
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
WHEELS_DIR = "infra/images/wheels"
MODEL_DIR = "model"

#: Label keys (the Dockerfile sets them from build args).
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_MODEL_NAME = "io.mlops.model.name"
LABEL_MODEL_VERSION = "io.mlops.model.version"
LABEL_MODEL_RUN_ID = "io.mlops.model.run_id"


def git_revision(repo: Path | None = None) -> str:
    """The commit of ``repo`` (``<sha>-dirty`` with uncommitted changes), or "" without git."""
    repo = repo or source_root()
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


def source_url(repo: Path | None = None) -> str:
    """``MLOPS_IMAGE_SOURCE_URL``, else the ``origin`` remote of ``repo`` (credentials stripped), else ""."""
    url = os.environ.get("MLOPS_IMAGE_SOURCE_URL", "")
    repo = repo or source_root()
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
    check_target(target)
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


# Left out of every image: the demo (data generator, traffic client, the scripted acts and loops) runs
# from a checkout against a stack; no serving or training process imports it (tests/unit/test_layering).
NOT_IN_IMAGES = ("mlops/demo",)


def _ignore_in_images(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree`` ignore: caches, build metadata and the parts in :data:`NOT_IN_IMAGES`."""
    left_out = {n for n in names if any(Path(folder, n).as_posix().endswith(p) for p in NOT_IN_IMAGES)}
    return left_out | set(shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")(folder, names))


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
    ``README.md``, ``include/`` (no caches, no demo), the image locks, the wheelhouse of the target's lock
    (:func:`download_wheels`; ``wheels=False``: empty folders, build with ``PIP_OFFLINE=0`` then)
    and, for serving, ``model_dir`` as ``model/``.
    """
    check_target(target)
    if target == "serving" and (model_dir is None or not (Path(model_dir) / "MLmodel").is_file()):
        raise ValueError(f"the serving context needs an MLflow model folder (MLmodel missing in {model_dir})")
    src = source_root()
    missing = [n for n in (*CONTEXT_FILES, "include") if not (src / n).exists()]
    if missing:
        raise ValueError(
            f"images are built from the platform's source tree, and {src} lacks {', '.join(missing)}: "
            "set MLOPS_SOURCE_DIR to a checkout of the platform"
        )
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"build context folder {dest} is not empty")
    for name in CONTEXT_FILES:
        shutil.copy2(source_root() / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(source_root() / "include", dest / "include", ignore=_ignore_in_images)
    locks = dest / "infra" / "images"
    locks.mkdir(parents=True)
    for t in TARGETS:
        shutil.copy2(lock_file(t), locks / lock_file(t).name)
    for folder in ("serving", "training"):  # both exist (the Dockerfile copies both), maybe empty
        (dest / WHEELS_DIR / folder).mkdir(parents=True)
    if wheels:
        download_wheels(target, dest / WHEELS_DIR, cache=wheel_cache)
    if target == "serving":
        assert model_dir is not None  # checked above
        shutil.copytree(model_dir, dest / MODEL_DIR, ignore=ignore)
    return dest


def download_model(
    name: str, version: str | int, dst: Path, tracking_uri: str | None = None
) -> tuple[Path, Any]:
    """The files of ``models:/<name>/<version>`` in ``dst`` and the model version (MLflow entity)."""
    from mlflow.artifacts import download_artifacts

    from mlops.registry.client import mlflow_client

    mv = mlflow_client(tracking_uri).get_model_version(name, str(version))
    path = download_artifacts(
        artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(dst), tracking_uri=tracking_uri
    )
    if not (Path(path) / "MLmodel").is_file():
        raise ImageError(f"models:/{name}/{version} downloaded to {path} holds no MLmodel file")
    return Path(path), mv
