"""Compute backends for training. ``local`` runs the same entrypoint as the container images."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TrainingProcessError(RuntimeError):
    """The training entrypoint exited non-zero (an infrastructure or data error: retried)."""


def run_local_training(
    model: str,
    data_paths: list[str],
    env: dict[str, str],
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
    models_dir: str | None = None,
) -> dict[str, Any]:
    """Run ``python -m mlops.training`` as a child process and return its JSON result.

    The child's output is streamed into the task log line by line, so progress is visible live.
    """
    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", "mlops.training", "--model", model, "--output", str(out)]
        if models_dir:
            argv += ["--models-dir", models_dir]
        for p in data_paths:
            argv += ["--data", p]
        for k, v in tags.items():
            argv += ["--tag", f"{k}={v}"]
        if params:
            argv += ["--params", json.dumps(params)]
        log.info("local training: %s", " ".join(argv))
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[train] %s", line.rstrip())
        rc = proc.wait()
        if rc != 0:
            raise TrainingProcessError(
                f"training process for {model!r} exited with code {rc} (see the lines above)"
            )
        return json.loads(out.read_text())
