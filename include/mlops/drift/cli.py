"""``mlops drift`` / ``python -m mlops.drift``: drift of a batch vs a reference profile, and profiles.

``mlops drift --reference P.json --current F`` exits 0 (no drift), 1 (drift) or 2 (insufficient data
or bad input, the message names the problem); ``mlops drift profile --train F --model M --out P.json``
makes the profile from a training frame.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(dr: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops drift``."""
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


def run(args: argparse.Namespace) -> int:
    """Exit 0 no drift, 1 drift, 2 insufficient data or bad input (the message names the problem)."""
    from mlops.data.io import read_batch
    from mlops.drift.detect import DriftThresholds, detect
    from mlops.drift.profile import DriftInputError, ReferenceProfile

    def need(*names: str) -> None:
        missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
        if missing:
            raise DriftInputError(f"`mlops drift {args.action}` needs {' and '.join(missing)}")

    try:
        if args.action == "profile":
            from mlops.config.model import get_model_config
            from mlops.config.settings import get_settings

            need("train", "model", "out")
            cfg = get_model_config(args.model, args.models_dir or get_settings().models_dir)
            cols = [*cfg.features.all, *([args.score_column] if args.score_column else [])]
            df = read_batch(args.train, cols, arrow=True)
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
        result = detect(
            prof, read_batch(args.current, cols, arrow=True), score=args.score_column, thresholds=thresholds
        )
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
        from mlops.drift.report import write_report

        print(f"report: {write_report(result, args.report)}")
    return {"no_drift": 0, "drift": 1}.get(result.status, 2)
