"""Drift detection: ``mlops.drift.detect`` vs Evidently's DataDriftPreset, side by side in one run.

    python bench/run.py drift                       # both sizes, writes docs/bench/drift.json
    python bench/drift.py --sizes 100000            # the same, standalone

Data (seeded): a reference and a current frame of N rows x 25 features, 20 numeric (normal, lognormal,
gamma, Poisson, uniform integers, binary, a point mass at 0 plus a tail...) and 5 categorical. Five
features are shifted: ``num_00`` mean +0.5 sd, ``num_01`` scale x2, ``num_02`` lognormal x1.3,
``cat_0`` category mix, ``cat_1`` a new category in 10 % of the rows. Two more carry negligible shifts
that a p-value alone flags at 1M rows and neither tool should: ``num_03`` (+0.02 sd) and ``cat_2``
(1 point of mix).

Each tool runs in its own subprocess, started from here; wall time and peak RSS are measured from
outside (``os.wait4`` returns the child's own rusage), phase timings come from inside. Evidently runs
in ``.venv-evidently`` (created here from bench/requirements-evidently.txt: Evidently 0.7.23 needs
pandas<3, so it is not a product dependency). Both read the same Parquet files. Ours does what the
platform does: profile the reference (once, at training time), drop it, then compare the current batch
with the profile and write the HTML report. Evidently gets both frames, as its API requires.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EV_VENV = REPO / ".venv-evidently"
EV_REQS = REPO / "bench" / "requirements-evidently.txt"
SHIFTED = ["num_00", "num_01", "num_02", "cat_0", "cat_1"]
NEGLIGIBLE = ["num_03", "cat_2"]


# --------------------------------------------------------------------------- data


def make_frame(n: int, seed: int, shifted: bool):
    """One frame of the benchmark; ``shifted`` applies the documented shifts."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    s = 1.0 if shifted else 0.0
    cols = {
        "num_00": rng.normal(50 + 5.0 * s, 10, n),  # mean +0.5 sd
        "num_01": rng.normal(0, 1 + s, n),  # scale x2
        "num_02": rng.lognormal(1.0, 0.5, n) * (1 + 0.3 * s),  # x1.3
        "num_03": rng.normal(100 + 0.3 * s, 15, n),  # negligible: +0.02 sd
        "num_04": rng.gamma(2.0, 3.0, n),
        "num_05": rng.poisson(3.0, n).astype("int64"),
        "num_06": rng.integers(0, 1000, n),
        "num_07": (rng.random(n) < 0.3).astype("int64"),
        "num_08": np.where(rng.random(n) < 0.4, 0.0, rng.exponential(20.0, n)),
        "num_09": rng.uniform(-5, 5, n),
        "num_10": rng.standard_t(4, n),
        "num_11": rng.beta(2, 5, n),
        "num_12": np.round(rng.normal(35, 8, n)),
        "num_13": rng.lognormal(3.0, 1.0, n),
        "num_14": rng.normal(0, 1, n) * 1e6,
        "num_15": rng.weibull(1.5, n),
        "num_16": rng.poisson(40, n).astype("int64"),
        "num_17": rng.normal(-3, 0.2, n),
        "num_18": rng.chisquare(3, n),
        "num_19": rng.laplace(0, 2, n),
    }
    mix = [0.3, 0.3, 0.4] if shifted else [0.5, 0.3, 0.2]
    cols["cat_0"] = rng.choice(np.array(["a", "b", "c"], dtype=object), n, p=mix)
    regions = np.array(["north", "south", "east", "west", "central"], dtype=object)
    cat1 = rng.choice(regions, n)
    if shifted:
        cat1[rng.random(n) < 0.10] = "new-region"
    cols["cat_1"] = cat1
    tiny = [0.39, 0.41, 0.2] if shifted else [0.4, 0.4, 0.2]
    cols["cat_2"] = rng.choice(np.array(["x", "y", "z"], dtype=object), n, p=tiny)
    cols["cat_3"] = rng.choice(np.array([f"plan-{i:02d}" for i in range(30)], dtype=object), n)
    cols["cat_4"] = rng.choice(np.array(["yes", "no"], dtype=object), n, p=[0.7, 0.3])
    return pd.DataFrame(cols)


NUMERIC = [f"num_{i:02d}" for i in range(20)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]


# --------------------------------------------------------------------------- the two children


def child_ours(ref_path: str, cur_path: str, out: str) -> None:
    t0 = time.perf_counter()
    import gc

    import scipy.special  # noqa: F401  (imported by detect; billed to the import phase, as Evidently's are)
    from mlops.data.io import read_batch
    from mlops.drift.detect import detect
    from mlops.drift.profile import ReferenceProfile
    from mlops.drift.report import write_report

    t_import = time.perf_counter()
    ref = read_batch(
        ref_path, NUMERIC + CATEGORICAL, arrow=True
    )  # what `mlops drift` does: Arrow-backed columns
    t_read_ref = time.perf_counter()
    profile = ReferenceProfile.from_frame(ref, NUMERIC, CATEGORICAL)
    t_profile = time.perf_counter()
    del ref
    gc.collect()
    profile = ReferenceProfile.from_json(profile.to_json())  # as stored with the model version
    t_json = time.perf_counter()
    cur = read_batch(cur_path, NUMERIC + CATEGORICAL, arrow=True)
    t_read_cur = time.perf_counter()
    result = detect(profile, cur)
    t_detect = time.perf_counter()
    write_report(result, Path(out).with_suffix(".html"))
    t_report = time.perf_counter()
    Path(out).write_text(
        json.dumps(
            {
                "flagged": result.drifted_features,
                "significant_only": [f.name for f in result.features if f.significant],
                "status": result.status,
                "profile_json_kb": round(len(profile.to_json()) / 1024),
                "phases": {
                    "import": t_import - t0,
                    "read": (t_read_ref - t_import) + (t_read_cur - t_json),
                    "profile": t_profile - t_read_ref,
                    "profile_json_roundtrip": t_json - t_profile,
                    "detect": t_detect - t_read_cur,
                    "report_html": t_report - t_detect,
                },
                "compute": (t_profile - t_read_ref) + (t_detect - t_read_cur),
            }
        )
    )


def child_evidently(ref_path: str, cur_path: str, out: str) -> None:
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    t_import = time.perf_counter()
    ref = pd.read_parquet(ref_path)
    cur = pd.read_parquet(cur_path)
    t_read = time.perf_counter()
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    t_run = time.perf_counter()
    flagged, methods, count = [], {}, None
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            method, threshold, value = cfg["method"], cfg["threshold"], m["value"]
            methods[cfg["column"]] = method
            # Evidently's rule: a p-value test drifts below its threshold, a distance at or above it
            drifted = value < threshold if "p_value" in method else value >= threshold
            if drifted:
                flagged.append(cfg["column"])
        elif cfg.get("type", "").endswith("DriftedColumnsCount"):
            count = m["value"]["count"]
    Path(out).write_text(
        json.dumps(
            {
                "flagged": sorted(flagged),
                "drifted_columns_count": count,
                "methods": sorted(set(methods.values())),
                "phases": {"import": t_import - t0, "read": t_read - t_import, "report_run": t_run - t_read},
                "compute": t_run - t_read,
            }
        )
    )


# --------------------------------------------------------------------------- orchestration


def ensure_evidently_venv() -> Path:
    """Create (or reuse) .venv-evidently from the pinned requirements; returns its python."""
    python = EV_VENV / "bin" / "python"
    digest = hashlib.sha256(EV_REQS.read_bytes()).hexdigest()
    marker = EV_VENV / ".requirements.sha256"
    if python.exists() and marker.exists() and marker.read_text() == digest:
        return python
    uv = Path(sys.executable).parent / "uv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([str(uv), "venv", "-q", "--clear", "--python", base, str(EV_VENV)], check=True)
    (EV_VENV / ".gitignore").write_text("*\n")  # never committed, never linted
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(python), "-r", str(EV_REQS)], check=True)
    marker.write_text(digest)
    return python


def run_child(python: str, role: str, ref: Path, cur: Path, out: Path, env: dict[str, str]) -> dict:
    """Run one tool in a subprocess; wall time and the child's own peak RSS (os.wait4) from outside."""
    argv = [python, str(Path(__file__).resolve()), role, str(ref), str(cur), str(out)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{role} failed with exit code {proc.returncode}")
    rec = json.loads(out.read_text())
    rec["wall"] = wall
    rec["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    rec["load"] = load
    return rec


def bench_drift(save, sizes: tuple[int, ...] = (100_000, 1_000_000)) -> None:
    ev_python = ensure_evidently_venv()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        for n in sizes:
            ref_p, cur_p = Path(tmp) / f"ref-{n}.parquet", Path(tmp) / f"cur-{n}.parquet"
            make_frame(n, seed=1, shifted=False).to_parquet(ref_p, index=False)
            make_frame(n, seed=2, shifted=True).to_parquet(cur_p, index=False)
            ours = run_child(sys.executable, "_ours", ref_p, cur_p, Path(tmp) / f"ours-{n}.json", env)
            print(f"{n:,} ours: {ours['wall']:.1f} s, {ours['peak_rss_mb']:.0f} MB", flush=True)
            ev = run_child(str(ev_python), "_evidently", ref_p, cur_p, Path(tmp) / f"ev-{n}.json", env)
            print(f"{n:,} evidently: {ev['wall']:.1f} s, {ev['peak_rss_mb']:.0f} MB", flush=True)
            for tool, rec in (("mlops.drift.detect", ours), ("Evidently 0.7.23 DataDriftPreset", ev)):
                exact = sorted(rec["flagged"]) == sorted(SHIFTED)
                row = {
                    "rows (ref = cur)": f"{n:,}",
                    "tool": tool,
                    "process wall (s)": round(rec["wall"], 2),
                    "compute (s)": round(rec["compute"], 3),
                    "phases (s)": ", ".join(f"{k} {v:.2f}" for k, v in rec["phases"].items()),
                    "peak RSS (MB)": round(rec["peak_rss_mb"]),
                    "flagged": ", ".join(rec["flagged"]) or "none",
                    "exactly the 5 shifted": "yes" if exact else "NO",
                    "machine load at start (1 min avg)": round(rec["load"], 1),
                }
                if rec is ours:
                    row["speed-up vs Evidently (wall / compute)"] = (
                        f"{ev['wall'] / ours['wall']:.0f}x / {ev['compute'] / ours['compute']:.0f}x"
                    )
                    row["RSS vs Evidently"] = f"{ours['peak_rss_mb'] / ev['peak_rss_mb']:.2f}"
                    row["p-value alone (BH) would flag"] = ", ".join(ours["significant_only"])
                else:
                    row["p-value alone (BH) would flag"] = f"methods: {', '.join(ev['methods'])}"
                rows.append(row)
    save(
        "drift",
        "python bench/run.py drift  (bench/drift.py: seeded frames, each tool in its own subprocess, "
        f"sizes {', '.join(f'{n:,}' for n in sizes)})",
        rows,
        "Shifted: num_00 (mean +0.5 sd), num_01 (scale x2), num_02 (lognormal x1.3), cat_0 (mix), cat_1 "
        "(10 % unseen category); negligible: num_03 (+0.02 sd), cat_2 (1 point of mix). Wall and peak RSS "
        "measured from outside (os.wait4 rusage of the child), interpreter start, imports and reading both "
        "Parquet files included (see the phases). Compute: ours = profile the reference + detect on the current "
        "batch; Evidently = Report([DataDriftPreset()]).run. Ours profiles the reference, drops it and "
        "compares the batch with the profile (the platform's flow: the profile is made once at training); "
        "Evidently holds both frames. Ours also writes its HTML report inside the wall time. "
        "Targets: >= 50x faster, <= 1/3 of Evidently's peak RSS, exactly the 5 shifted features. The machine "
        "is shared (other jobs running: see the load column): compare the two tools within one size.",
    )


def _load_run_module():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] in ("_ours", "_evidently"):
        (child_ours if sys.argv[1] == "_ours" else child_evidently)(*sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    args = p.parse_args()
    run = _load_run_module()
    bench_drift(run.save, tuple(int(s) for s in args.sizes.split(",")))
    run.write_report()


if __name__ == "__main__":
    main()
