"""The ``mlops`` command line: one tool, one subcommand per capability.

mlops config                 effective configuration (secrets masked)
mlops models                 model configs found and whether they are valid
mlops generate ...           write a synthetic batch (demo data)
mlops train ...              the training entrypoint (same in a pod, a container or locally)
mlops stack up|down|status   the local stack of the embedded default
mlops demo                   run the main job through Airflow and print a summary
mlops serve --model-uri URI  the model server (HTTP, Prometheus metrics, prediction log)
mlops drift [profile] ...    drift of a batch vs a reference profile (exit 0 none, 1 drift, 2 cannot tell)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from mlops import __version__
from mlops.settings import get_settings


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops", description="MLOps platform on Apache Airflow 3: the domain command line."
    )
    p.add_argument("--version", action="version", version=f"mlops {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    c.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("models", help="list model configs and check that each is valid")

    g = sub.add_parser("generate", help="write a synthetic batch of demo data (CSV or Parquet by extension)")
    g.add_argument("--model", required=True, help="model with a built-in generator (churn)")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, type=Path, help="output file, .csv or .parquet")
    g.add_argument(
        "--drift", type=float, default=0.0, help="0 = none, 1 = strong shift of documented features"
    )

    t = sub.add_parser("train", help="train, evaluate, log to MLflow and register a @challenger version")
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

    s = sub.add_parser("stack", help="the local stack (Airflow + MLflow on 127.0.0.1)")
    s.add_argument("action", choices=["up", "down", "status"])

    d = sub.add_parser("demo", help="run the main job through Airflow on the local stack and print a summary")
    d.add_argument("--model", default="churn")
    d.add_argument("--timeout", type=int, default=900, help="seconds to wait for the DAG run")

    v = sub.add_parser("serve", help="serve an MLflow model over HTTP (MLflow-compatible /invocations)")
    v.add_argument(
        "--model-uri", required=True, help="models:/name/version, models:/name@alias, runs:/..., or a path"
    )
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--workers", type=int, default=1, help="1: uvicorn; N: gunicorn with N uvicorn workers")
    v.add_argument(
        "--variant",
        default=os.environ.get("MLOPS_SERVE_VARIANT") or "stable",
        help="stable, canary, staging...",
    )
    v.add_argument("--model-name", help="name in metrics, logs and /version (default: from the URI)")
    v.add_argument(
        "--model-version", help="version label (default: resolved from a models:/ URI, else unknown)"
    )
    v.add_argument(
        "--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, then the local stack)"
    )
    v.add_argument(
        "--predictions-dir",
        type=Path,
        help="prediction log folder (default: $MLOPS_HOME/predictions/<model>)",
    )
    v.add_argument("--sample-rate", type=float, default=1.0, help="share of requests logged (0 = none)")
    v.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger bodies get 413")
    v.add_argument(
        "--max-batch-rows", type=int, default=256, help="rows of concurrent requests per model call (0 = off)"
    )
    r = sub.add_parser("route", help="the local endpoint: split traffic between model servers by weight")
    r.add_argument("--routes", type=Path, required=True, help="routing table written by the local target")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8000)
    dr = sub.add_parser(
        "drift",
        help="compare a batch with a reference profile (exit 0 no drift, 1 drift, 2 insufficient data or "
        "bad input); `mlops drift profile` makes the profile from a training frame",
    )
    dr.add_argument("action", nargs="?", choices=["check", "profile"], default="check")
    dr.add_argument("--reference", type=Path, help="check: reference profile JSON")
    dr.add_argument("--current", type=Path, help="check: current batch, .csv or .parquet")
    dr.add_argument("--report", type=Path, help="check: write the HTML report here")
    dr.add_argument("--json", dest="json_out", type=Path, help="check: write the result as JSON here")
    dr.add_argument("--min-rows", type=int, default=200, help="check: fewer rows = insufficient data")
    dr.add_argument("--score-column", help="column holding the model score (both files)")
    dr.add_argument("--train", type=Path, help="profile: training frame, .csv or .parquet")
    dr.add_argument("--model", help="profile: model whose config lists the features")
    dr.add_argument("--models-dir", type=Path, help="folder of model configs (default: MLOPS_MODELS_DIR)")
    dr.add_argument("--out", type=Path, help="profile: JSON file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    handler = {
        "config": _cmd_config,
        "models": _cmd_models,
        "generate": _cmd_generate,
        "train": _cmd_train,
        "stack": _cmd_stack,
        "demo": _cmd_demo,
        "serve": _cmd_serve,
        "drift": _cmd_drift,
        "route": _cmd_route,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every command ends with one readable line, not a traceback
        if args.verbose:
            raise
        print(f"mlops {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _cmd_config(args: argparse.Namespace) -> int:
    values = get_settings().masked()
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    width = max(len(k) for k in values)
    for k, v in values.items():
        env = "" if " " in k else f"  (MLOPS_{k.upper()})"
        print(f"{k:<{width}}  {v}{env}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from mlops.modelconfig import ModelConfigError, discover_model_configs, load_model_config

    folder = get_settings().models_dir
    found = discover_model_configs(folder)
    if not found:
        print(f"no model configs in {folder}", file=sys.stderr)
        return 1
    bad = 0
    for name, path in found.items():
        try:
            cfg = load_model_config(path)
            print(f"{name:<20} ok       target={cfg.target} features={len(cfg.features.all)} ({path})")
        except ModelConfigError as exc:
            bad += 1
            print(f"{name:<20} INVALID  {exc}")
    return 1 if bad else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from mlops.datagen import generate, write_frame

    df = generate(args.model, args.rows, seed=args.seed, drift=args.drift)
    out = write_frame(df, args.out)
    rate = float(df[df.columns[-1]].mean()) if len(df) else 0.0
    print(
        f"wrote {len(df)} rows x {df.shape[1]} columns to {out} (positive rate {rate:.3f}, drift {args.drift})"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mlops.modelconfig import get_model_config
    from mlops.training import train

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
            from mlops.versioning import fetch_training_set

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


def _cmd_stack(args: argparse.Namespace) -> int:
    from mlops import stack

    settings = get_settings()
    if args.action == "up":
        stack.up(settings)
    elif args.action == "down":
        stack.down(settings)
    else:
        rows = stack.status(settings)
        for r in rows:
            print(f"{r['service']:<14} {r['state']:<8} pid {r['pid']:<8} {r['health']}")
        required_ok = all(r["health"] == "healthy" for r in rows if not r["optional"])
        optional_ok = all(
            r["health"] == "-" or r["health"].startswith("healthy") for r in rows if r["optional"]
        )
        return 0 if required_ok and optional_ok else 3
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mlops.demo import run_demo

    return run_demo(get_settings(), model=args.model, timeout=args.timeout)


def _cmd_serve(args: argparse.Namespace) -> int:
    from mlops.serving import serve

    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri is None and args.model_uri.startswith(("models:/", "runs:/")):
        tracking_uri = get_settings().tracking_uri
    return serve(
        args.model_uri,
        host=args.host,
        port=args.port,
        workers=args.workers,
        variant=args.variant,
        tracking_uri=tracking_uri,
        model_name=args.model_name,
        model_version=args.model_version,
        predictions_dir=args.predictions_dir,
        sample_rate=args.sample_rate,
        max_body_bytes=args.max_body_bytes,
        max_batch_rows=args.max_batch_rows,
    )


def _cmd_route(args: argparse.Namespace) -> int:
    from mlops.deploy.router import run

    return run(args.routes, args.host, args.port)


def _cmd_drift(args: argparse.Namespace) -> int:
    """Exit 0 no drift, 1 drift, 2 insufficient data or bad input (the message names the problem)."""
    from mlops.drift import DriftInputError, DriftThresholds, ReferenceProfile, detect, read_frame

    def need(*names: str) -> None:
        missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
        if missing:
            raise DriftInputError(f"`mlops drift {args.action}` needs {' and '.join(missing)}")

    try:
        if args.action == "profile":
            from mlops.modelconfig import get_model_config

            need("train", "model", "out")
            cfg = get_model_config(args.model, args.models_dir or get_settings().models_dir)
            cols = [*cfg.features.all, *([args.score_column] if args.score_column else [])]
            df = read_frame(args.train, cols)
            prof = ReferenceProfile.from_frame(
                df, cfg.features.numeric, cfg.features.categorical, score=args.score_column
            )
            prof.save(args.out)
            print(f"wrote the profile ({len(prof.features)} features, {prof.n_rows} rows): {args.out}")
            return 0
        need("reference", "current")
        thresholds = DriftThresholds(min_rows=args.min_rows)
        prof = ReferenceProfile.load(args.reference)
        if args.score_column and prof.score is None:
            raise DriftInputError(f"{args.reference} has no score distribution (made without --score-column)")
        cols = [*prof.features, *([args.score_column] if args.score_column else [])]
        result = detect(prof, read_frame(args.current, cols), score=args.score_column, thresholds=thresholds)
    except (DriftInputError, ValueError, OSError) as exc:  # ModelConfigError is a ValueError
        print(f"mlops drift: error: {exc}", file=sys.stderr)
        return 2
    print(result.message)
    for fd in result.features:
        if fd.drifted:
            print(f"  {fd.name}: {fd.reason}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(result.to_json())
    if args.report:
        from mlops.drift_report import write_report

        print(f"report: {write_report(result, args.report)}")
    return {"no_drift": 0, "drift": 1}.get(result.status, 2)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
