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
import importlib
import logging
import sys

from mlops import __version__

#: command -> (module, function adding its arguments, function running it, help). Each capability owns
#: its command line; this module only builds the parser from them and dispatches.
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "config": ("mlops.config.cli", "add_config_arguments", "run_config",
               "print the effective configuration (secrets masked)"),
    "models": ("mlops.config.cli", "add_models_arguments", "run_models",
               "list model configs and check that each is valid"),
    "generate": ("mlops.demo.cli", "add_generate_arguments", "run_generate",
                 "write a synthetic batch of demo data (CSV or Parquet by extension)"),
    "train": ("mlops.training.cli", "add_arguments", "run",
              "train, evaluate, log to MLflow and register a @challenger version"),
    "stack": ("mlops.stack.cli", "add_arguments", "run", "the local stack (Airflow + MLflow on 127.0.0.1)"),
    "demo": ("mlops.demo.cli", "add_demo_arguments", "run_demo",
             "run the main job through Airflow on the local stack and print a summary"),
    "serve": ("mlops.serving.runner", "add_arguments", "run",
              "serve an MLflow model over HTTP (MLflow-compatible /invocations)"),
    "route": ("mlops.deploy.local.cli", "add_arguments", "run",
              "the local endpoint: split traffic between model servers by weight"),
    "supervise": ("mlops.deploy.local.cli", "add_supervise_arguments", "run_supervise",
                  "restart a crashed router or model server of a local endpoint (started with it)"),
    "drift": ("mlops.drift.cli", "add_arguments", "run",
              "compare a batch with a reference profile (exit 0 no drift, 1 drift, 2 insufficient data or "
              "bad input); `mlops drift profile` makes the profile from a training frame"),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``mlops`` parser, one subcommand per entry of :data:`COMMANDS`."""
    p = argparse.ArgumentParser(
        prog="mlops", description="MLOps platform on Apache Airflow 3: the domain command line."
    )
    p.add_argument("--version", action="version", version=f"mlops {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, add, _, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        try:
            getattr(importlib.import_module(module), add)(cmd)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise  # a missing dependency, not a left-out part of the platform
            # the images leave the demo out (see packaging.context): the command says so when used
            cmd.set_defaults(missing=exc.name)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``mlops`` command; every failure ends with one readable line (``-v``: the traceback)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "missing", None):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    module, _, run, _ = COMMANDS[args.command]
    if getattr(args, "missing", None):
        print(f"mlops {args.command}: error: {args.missing} is not installed here (images leave it out); "
              "run it from a checkout of the platform", file=sys.stderr)  # fmt: skip
        return 2
    try:
        return getattr(importlib.import_module(module), run)(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every command ends with one readable line, not a traceback
        if args.verbose:
            raise
        print(f"mlops {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover - `python -m mlops` is the same
    raise SystemExit(main())
