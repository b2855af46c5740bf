"""Several worker processes of one server: their shared folder of metrics files and ready markers.

With more than one worker the runner prepares one folder before any worker starts (and before
prometheus_client is imported): ``PROMETHEUS_MULTIPROC_DIR`` for the metrics of every process, and
``ready.<pid>`` markers a worker leaves once its model is warm, so that ``/ready`` answers 200 only
when every worker can serve.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from mlops.serving.metrics import MULTIPROC_ENV, multiproc_dir
from mlops.serving.settings import ServingSettings

READY_PREFIX = "ready."


def ready_marker(state_dir: str | Path, pid: int) -> Path:
    """The marker of worker ``pid``."""
    return Path(state_dir) / f"{READY_PREFIX}{pid}"


def live_ready_markers(folder: Path) -> int:
    """How many workers are ready and alive (markers of dead processes are removed)."""
    live = 0
    for p in folder.glob(f"{READY_PREFIX}*"):
        try:
            os.kill(int(p.name[len(READY_PREFIX) :]), 0)
            live += 1
        except (ValueError, ProcessLookupError):
            with contextlib.suppress(OSError):
                p.unlink()
        except PermissionError:
            live += 1
    return live


def prepare_multiprocess(settings: ServingSettings) -> tuple[ServingSettings, str | None]:
    """Several workers: a clean PROMETHEUS_MULTIPROC_DIR (also the ready-marker folder), before any
    metric exists. Returns the settings and the folder to remove at exit (None if not ours)."""
    if settings.workers <= 1:
        return settings, None
    ours = None
    folder = multiproc_dir()
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for p in Path(folder).iterdir():
            if p.suffix == ".db" or p.name.startswith(READY_PREFIX):
                p.unlink()
    else:
        if "prometheus_client" in sys.modules:
            # prometheus_client picks its single- or multi-process storage when first imported
            raise RuntimeError(
                f"several workers need {MULTIPROC_ENV} set before prometheus_client is imported: "
                f"set it in the environment of this process"
            )
        folder = ours = tempfile.mkdtemp(prefix="mlops-serve-metrics-")
        os.environ[MULTIPROC_ENV] = folder
    return replace(settings, state_dir=folder), ours
