"""Defaults of the platform's settings, and the few of them DAG files read at parse time.

:class:`mlops.settings.Settings` is the one typed view of the configuration, but importing
pydantic-settings costs ~0.1 s: the whole parse budget of a DAG file. So the handful of values that
shape a DAG's structure are read here with plain ``os.environ`` using the same names and defaults;
a unit test keeps both readings equal.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_MODELS_DIR = Path(__file__).resolve().parent / "model_configs"
DEFAULT_HOME = REPO_ROOT / ".mlops"
DEFAULT_DATA_ROOT = REPO_ROOT / "data"
#: The embedded default has no container engine and no cluster; docker-compose adds ``docker``, a
#: Kubernetes deployment sets ``kubernetes`` (each backend's provider is imported at DAG parse time).
DEFAULT_TRAINING_BACKENDS = "local"
DEFAULT_DOCKER_URL = "unix:///run/podman/podman.sock"
BACKENDS = ("local", "docker", "kubernetes")


def resolve_path(value: str | Path) -> Path:
    """A configured path: absolute as given, relative ones from the repository root (never the cwd,
    which differs between the CLI, the Airflow services and their tasks)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def models_dir() -> Path:
    return resolve_path(os.environ.get("MLOPS_MODELS_DIR") or BUILTIN_MODELS_DIR)


def data_root() -> Path:
    return resolve_path(os.environ.get("MLOPS_DATA_ROOT") or DEFAULT_DATA_ROOT)


def docker_url() -> str:
    return os.environ.get("MLOPS_DOCKER_URL") or DEFAULT_DOCKER_URL


def training_backends() -> list[str]:
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
