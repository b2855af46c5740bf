"""What the training entrypoint is asked to do: its command line, environment and run tags.

The DAG's ``prepare_training`` task calls :func:`training_spec`; whichever backend runs the training
(a child process, a Docker container, a Kubernetes pod) runs exactly this ``argv`` with this ``env``.
No credentials in it: the spec is stored as XCom (the local task adds them at run time, pods get them
from a Kubernetes Secret).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from mlops.config.model import ModelConfig
from mlops.registry import tags

#: Where a Kubernetes pod writes its result for the KubernetesPodOperator's XCom sidecar.
KUBERNETES_RESULT_PATH = "/airflow/xcom/return.json"


def git_commit() -> str:
    """The platform's commit (the git checkout this package runs from), or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def entrypoint_argv(
    model: str,
    training_set: dict[str, Any],
    *,
    fetch: bool,
    models_dir: str | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    output: str | None = None,
    python: str = "python",
) -> list[str]:
    """The command line of the training entrypoint for one versioned training set.

    ``fetch=False``: the batch files are read where they are (local process, or a container with the
    data folder mounted at the same path). ``fetch=True``: paths are given relative to the data repo
    and the entrypoint pulls them through DVC at the recorded revision (a pod with no shared disk).
    """
    argv = [python, "-m", "mlops.training", "--model", model]
    if models_dir:
        argv += ["--models-dir", models_dir]
    for rel in training_set["paths"]:
        argv += ["--data", rel if fetch else str(Path(training_set["repo"]) / rel)]
    argv += ["--dvc-repo", training_set["repo"], "--dvc-rev", training_set["rev"]]
    argv += ["--data-digest", training_set["digest"]]
    for k, v in (tags or {}).items():
        argv += ["--tag", f"{k}={v}"]
    if params:
        argv += ["--params", json.dumps(params, sort_keys=True)]
    if output:
        argv += ["--output", output]
    return argv


def run_tags(
    *, dag_id: str, run_id: str, try_number: int, force_promote: bool, alert: dict[str, Any] | None
) -> dict[str, str]:
    """The tags of the training run and its model version: which Airflow run made it, and why."""
    out = {
        tags.AIRFLOW_DAG_ID: dag_id,
        tags.AIRFLOW_RUN_ID: run_id,
        tags.AIRFLOW_TRY_NUMBER: str(try_number),
    }
    if force_promote:
        out[tags.FORCE_PROMOTE] = "requested"
    if alert:
        out[tags.TRIGGER] = tags.TRIGGER_ALERT
        out[tags.ALERT_NAME] = str(alert.get("name", ""))
        out[tags.ALERT_FINGERPRINT] = str(alert.get("fingerprint", ""))
        out[tags.ALERT_DRIFTED_FEATURES] = ",".join(alert.get("drifted_features") or [])
    out[tags.GIT_COMMIT] = git_commit()  # a container has no git: record the platform's commit here
    return out


def training_spec(
    cfg: ModelConfig,
    training_set: dict[str, Any],
    *,
    backend: str,
    offered: list[str],
    run_tags: dict[str, str],
    hyperparameters: dict[str, Any] | None,
    models_dir: str,
    tracking_uri: str,
) -> dict[str, Any]:
    """``{"backend", "argv", "env"}`` for one training run on ``backend``.

    Raises:
        ValueError: ``backend`` is not among the backends ``offered`` for this model.
    """
    if backend not in offered:
        raise ValueError(f"backend {backend!r} is not offered for {cfg.name} (offered: {offered})")
    pod = backend == "kubernetes"  # no shared disk: fetch the data through DVC, the config from the image
    argv = entrypoint_argv(
        cfg.name,
        training_set,
        fetch=pod,
        models_dir=None if pod else models_dir,
        tags=run_tags,
        params=hyperparameters or None,
        output=KUBERNETES_RESULT_PATH if pod else None,
    )
    env = {"OMP_NUM_THREADS": str(cfg.training.threads)}  # threads: one per CPU the training may use
    if not pod:
        env["MLFLOW_TRACKING_URI"] = tracking_uri  # pods get it (and credentials) from the Secret
    return {"backend": backend, "argv": argv, "env": env}
