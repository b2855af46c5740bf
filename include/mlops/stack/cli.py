"""``mlops stack up|down|status``: the embedded local stack."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops stack``."""
    p.add_argument("action", choices=["up", "down", "status"])


def run(args: argparse.Namespace) -> int:
    """Start, stop or report the local stack; ``status`` exits 3 when a part is unhealthy."""
    from mlops.config.settings import get_settings
    from mlops.stack import local as stack

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
