"""Where the local deployment target tells Prometheus what to scrape: one file_sd JSON file per model.

The local target rewrites it with its routing table (target labels ``model``, ``role``,
``model_version``); the local stack's Prometheus config watches every such file.
"""

from __future__ import annotations

from pathlib import Path

TARGETS_SUFFIX = ".prometheus-targets.json"


def targets_path(home: Path, model: str) -> Path:
    """The file_sd file of one model's backends."""
    return Path(home) / "serving" / f"{model}{TARGETS_SUFFIX}"


def targets_glob(home: Path) -> str:
    """What Prometheus' ``file_sd_configs`` watches: every model's file."""
    return str(Path(home) / "serving" / f"*{TARGETS_SUFFIX}")
