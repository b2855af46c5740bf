"""The ``local`` compute backend: the training entrypoint as a child process of the task.

Same command line as the Docker and Kubernetes backends (see ``mlops.training.spec.entrypoint_argv``).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlops.config.secrets import scrubbed_env

log = logging.getLogger(__name__)


class TrainingProcessError(RuntimeError):
    """The training entrypoint exited non-zero (an infrastructure or data error: retried)."""


def run_local_training(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run the entrypoint ``argv`` with this interpreter and return its JSON result.

    The child's output is streamed into the task log line by line, so progress is visible live.
    """
    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, *argv[1:], "--output", str(out)]
        log.info("local training: %s", " ".join(cmd))
        proc = subprocess.Popen(
            # the worker's environment minus Airflow's keys and connections: training needs MLflow only
            cmd,
            env={**scrubbed_env(os.environ), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[train] %s", line.rstrip())
        rc = proc.wait()
        if rc != 0:
            raise TrainingProcessError(f"training process exited with code {rc} (see the lines above)")
        result = json.loads(out.read_text())
        # ru_maxrss of waited-for children, in KiB on Linux: the training process's peak memory.
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        log.info("training process peak memory: %.0f MB", result["peak_rss_mb"])
        return result
