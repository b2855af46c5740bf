"""``mlops demo`` and ``mlops generate``: the demo through Airflow, and synthetic batches."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_demo_arguments(d: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops demo``."""
    d.add_argument("--model", default="churn")
    d.add_argument("--timeout", type=int, default=900, help="seconds to wait for the DAG run")
    d.add_argument(
        "--loop-cycles",
        type=int,
        default=1,
        help="closed loops in a row in act 4 (soak mode); each must end with a new alert-triggered champion",
    )
    d.add_argument(
        "--loop-cooldown",
        type=float,
        default=None,
        metavar="MINUTES",
        help="retraining cooldown during act 4 (default 1; set through the Airflow Variable "
        "mlops_retraining and restored afterwards)",
    )
    d.add_argument(
        "--loop-only", action="store_true", help="skip acts 1-3 (needs a served @champion): only the loop"
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo's acts on the local stack; exit 0 only when every act ended as expected."""
    from mlops.config.settings import get_settings
    from mlops.demo.acts import run_demo as demo

    if args.loop_cycles < 1:
        raise SystemExit(f"mlops demo: --loop-cycles must be at least 1, got {args.loop_cycles}")
    return demo(
        get_settings(),
        model=args.model,
        timeout=args.timeout,
        loop_cycles=args.loop_cycles,
        loop_cooldown_minutes=args.loop_cooldown,
        loop_only=args.loop_only,
    )


def add_generate_arguments(g: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops generate``."""
    g.add_argument("--model", required=True, help="model with a built-in generator (churn)")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, type=Path, help="output file, .csv or .parquet")
    g.add_argument(
        "--drift", type=float, default=0.0, help="0 = none, 1 = strong shift of documented features"
    )


def run_generate(args: argparse.Namespace) -> int:
    """Write one synthetic batch; refuses to overwrite a file."""
    from mlops.demo.datagen import generate, write_frame

    df = generate(args.model, args.rows, seed=args.seed, drift=args.drift)
    out = write_frame(df, args.out)
    rate = float(df[df.columns[-1]].mean()) if len(df) else 0.0
    print(
        f"wrote {len(df)} rows x {df.shape[1]} columns to {out} (positive rate {rate:.3f}, drift {args.drift})"
    )
    return 0
