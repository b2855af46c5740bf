"""``mlops train`` / ``python -m mlops.training``: the training entrypoint's command line.

The same argv runs in a child process of a task, in a Docker container and in a Kubernetes pod; the
last line of stdout is the compact JSON result (the Docker backend's XCom), ``--output`` writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def _json_obj(text: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return obj


def add_arguments(t: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops train``."""
    t.add_argument("--model", required=True)
    t.add_argument(
        "--data",
        action="append",
        required=True,
        type=Path,
        help="batch file (repeatable); a relative path with --dvc-repo is fetched through DVC at --dvc-rev",
    )
    t.add_argument("--dvc-repo", help="data repository (path or git URL) the training set is versioned in")
    t.add_argument("--dvc-rev", help="revision of the data repository (recorded as lineage)")
    t.add_argument("--data-digest", help="digest of the training set (recorded as lineage)")
    t.add_argument("--models-dir", type=Path, help="folder of model configs (default: MLOPS_MODELS_DIR)")
    t.add_argument(
        "--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, then the local stack)"
    )
    t.add_argument(
        "--tag", action="append", type=_kv, default=[], help="extra run tag KEY=VALUE (repeatable)"
    )
    t.add_argument("--params", type=_json_obj, help="hyperparameter overrides as a JSON object")
    t.add_argument("--run-name")
    t.add_argument("--output", type=Path, help="also write the JSON result here")


def run(args: argparse.Namespace) -> int:
    """Train one model version from the parsed arguments; print the result as the last line."""
    from mlops.config.model import get_model_config
    from mlops.config.settings import get_settings
    from mlops.training.train import train

    settings = get_settings()
    cfg = get_model_config(args.model, args.models_dir or settings.models_dir)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    lineage = {
        k: v
        for k, v in (
            ("dvc_repo", args.dvc_repo),
            ("dvc_rev", args.dvc_rev),
            ("data_digest", args.data_digest),
        )
        if v
    }
    with tempfile.TemporaryDirectory(prefix="mlops-data-") as tmp:
        paths = list(args.data)
        relative = [str(p) for p in paths if not p.is_absolute()]
        if relative and args.dvc_repo:
            from mlops.data.versioning import fetch_training_set

            if not args.dvc_rev:
                raise ValueError("--dvc-rev is required to fetch relative --data paths from --dvc-repo")
            fetched = iter(fetch_training_set(args.dvc_repo, args.dvc_rev, relative, tmp))
            paths = [p if p.is_absolute() else next(fetched) for p in paths]
        result = train(
            cfg,
            paths,
            tracking_uri,
            params=args.params,
            tags=dict(args.tag),
            run_name=args.run_name,
            lineage=lineage,
        )
    text = result.to_json()
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    # The last stdout line is the compact JSON result: DockerOperator pushes it as the task's XCom.
    print(json.dumps(json.loads(text), sort_keys=True), flush=True)
    return 0
