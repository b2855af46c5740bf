"""``mlops route`` (the local endpoint, splitting traffic by weight) and ``mlops supervise``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(r: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops route``."""
    r.add_argument("--routes", type=Path, required=True, help="routing table written by the local target")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8000)
    r.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="larger bodies get 413 (default: the model servers' limit)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve the router until stopped."""
    from mlops.deploy.local.router import run as route
    from mlops.serving.settings import DEFAULT_MAX_BODY_BYTES

    return route(args.routes, args.host, args.port, args.max_body_bytes or DEFAULT_MAX_BODY_BYTES)


def add_supervise_arguments(r: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops supervise``."""
    r.add_argument("--model", required=True, help="model whose local endpoint is supervised")
    r.add_argument("--port", type=int, default=None, help="its endpoint port (default: MLOPS_SERVING_PORT)")
    r.add_argument("--interval", type=float, default=1.0, help="seconds between checks")


def run_supervise(args: argparse.Namespace) -> int:
    """Supervise the router and backends of one local endpoint until stopped."""
    from mlops.deploy.local.supervisor import run as supervise
    from mlops.deploy.local.target import LocalTarget

    return supervise(LocalTarget(args.model, port=args.port), interval=args.interval)
