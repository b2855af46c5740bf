"""Defaults of the platform's settings, and the few of them DAG files read at parse time.

:class:`mlops.config.settings.Settings` is the one typed view of the configuration, but importing
pydantic-settings costs ~0.1 s: the whole parse budget of a DAG file. So the handful of values that
shape a DAG's structure are read here with plain ``os.environ`` using the same names and defaults;
a unit test keeps both readings equal.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlops.config.resources import builtin_models_dir

BUILTIN_MODELS_DIR = builtin_models_dir()  # package data
DEFAULT_HOME = Path(".mlops")  # relative: under the project folder
DEFAULT_DATA_ROOT = Path("data")
#: The embedded default has no container engine and no cluster; docker-compose adds ``docker``, a
#: Kubernetes deployment sets ``kubernetes`` (each backend's provider is imported at DAG parse time).
DEFAULT_TRAINING_BACKENDS = "local"
DEFAULT_DOCKER_URL = "unix:///run/podman/podman.sock"
BACKENDS = ("local", "docker", "kubernetes")


def project_dir() -> Path:
    """The project folder: relative paths in settings, the ``.env`` file, and the ``dags/`` and
    ``plugins/`` folders the local stack runs. ``MLOPS_PROJECT_DIR`` (the Makefile and the local stack
    set it for every process they start), else the current directory. The installed package never
    looks for files next to itself: what it reads at run time is package data (``mlops.config.resources``).
    """
    return Path(os.environ.get("MLOPS_PROJECT_DIR") or os.getcwd()).resolve()


def source_dir() -> Path:
    """The platform's source tree that image builds need (``Dockerfile``, ``infra/images/`` locks,
    ``pyproject.toml``, ``include/``): ``MLOPS_SOURCE_DIR``, else the project folder."""
    return Path(os.environ.get("MLOPS_SOURCE_DIR") or project_dir()).resolve()


def resolve_path(value: str | Path) -> Path:
    """A configured path: absolute as given, relative ones from the project folder (never the cwd of
    whichever process reads it: the CLI, the Airflow services and their tasks all get the same)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else project_dir() / p


def models_dir() -> Path:
    """Folder of model config files: ``MLOPS_MODELS_DIR``, else the model configs shipped with the package."""
    return resolve_path(os.environ.get("MLOPS_MODELS_DIR") or BUILTIN_MODELS_DIR)


def data_root() -> Path:
    """Root of landing/, quarantine/ and accepted batches: ``MLOPS_DATA_ROOT``, else the default."""
    return resolve_path(os.environ.get("MLOPS_DATA_ROOT") or DEFAULT_DATA_ROOT)


def docker_url() -> str:
    """Docker API the docker training backend talks to: ``MLOPS_DOCKER_URL``, else Podman's socket."""
    return os.environ.get("MLOPS_DOCKER_URL") or DEFAULT_DOCKER_URL


def training_backends() -> list[str]:
    """Training backends the platform enables (``MLOPS_TRAINING_BACKENDS``); an unknown name is an error."""
    raw = os.environ.get("MLOPS_TRAINING_BACKENDS") or DEFAULT_TRAINING_BACKENDS
    names = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ValueError(
            f"MLOPS_TRAINING_BACKENDS names unknown backends {unknown} (choose from {', '.join(BACKENDS)})"
        )
    return names


def deploy_target(configured: str) -> str:
    """The deployment target at parse time: ``MLOPS_DEPLOY_TARGET`` overrides the model config."""
    return os.environ.get("MLOPS_DEPLOY_TARGET") or configured
