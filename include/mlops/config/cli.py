"""``mlops config`` and ``mlops models``: the effective configuration and the model configs found."""

from __future__ import annotations

import argparse
import json
import sys


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops config``."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run_config(args: argparse.Namespace) -> int:
    """Print every setting (secrets masked) with the variable that sets it."""
    from mlops.config.settings import get_settings

    values = get_settings().masked()
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    width = max(len(k) for k in values)
    for k, v in values.items():
        env = "" if " " in k else f"  (MLOPS_{k.upper()})"
        print(f"{k:<{width}}  {v}{env}")
    return 0


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    """``mlops models`` takes no arguments."""


def run_models(args: argparse.Namespace) -> int:
    """List the model configs found and check each; exit 1 when one is invalid or none is found."""
    from mlops.config.model import ModelConfigError, discover_model_configs, load_model_config
    from mlops.config.settings import get_settings

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
