"""Load held through rollouts: the local endpoint under steady client load while canaries run.

    python bench/run.py rollout-load           # writes docs/bench/rollout-load.json and docs/BENCHMARKS.md
    python bench/rollout_load.py --minutes 1   # a quick look: prints the table, writes nothing

A real MLflow server (started as ``make up`` does) holds three versions of a small churn pipeline: v1,
v2 (another seed) and a deliberately bad one (a prior-only classifier: one score for every row). The
local target serves v1 as stable behind its router and supervisor. ``CLIENTS`` client threads (the
demo's ``Traffic``) send single-row ``POST /invocations`` through the router for the whole run, each
request recorded with its status, latency and the answering role (``x-mlops-variant``). Meanwhile rollouts run back to back, as the deployment
DAG's rollout task would (``rollout.run``: canary 10 -> 50 -> 100 % with metric analysis): a good
version is promoted, then the bad one is caught and rolled back, alternating until the time is up.

Reported: requests and failures per answering role and in all, failures with no role (the router
could not answer), p50/p99/max latency over the whole run and during rollouts, and each rollout's
outcome and duration. The target: 0 failed requests on stable, nothing lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 4
MINUTES = 5.0


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))] if s else float("nan")


def measure(minutes: float = MINUTES, clients: int = CLIENTS) -> tuple[list[dict], dict]:
    sys.path.insert(0, str(REPO))
    from mlops.config.model import AnalysisConfig, get_model_config
    from mlops.config.settings import Settings, get_settings
    from mlops.demo.datagen import generate_churn
    from mlops.demo.traffic import Traffic
    from mlops.deploy.local.target import LocalTarget
    from mlops.deploy.rollout import plan, run

    from tests.helpers import free_port, mlflow_server, register_churn_model

    policy = AnalysisConfig(window_s=10, min_requests=50, max_wait_s=60)
    steps = [10, 50, 100]
    with tempfile.TemporaryDirectory(prefix="rollout-load-") as tmp_name:
        tmp = Path(tmp_name)
        with mlflow_server(tmp / "mlflow") as uri:
            name = "churn_load"
            good = [register_churn_model(uri, name, seed=s) for s in (1, 2)]
            bad = register_churn_model(uri, name, seed=3, constant=True)
            cfg = get_model_config("churn", get_settings().models_dir)
            rows = json.loads(generate_churn(300, seed=9)[cfg.features.all].to_json(orient="records"))
            s = Settings(home=tmp / "home", mlflow_tracking_uri=uri, serving_port=free_port())
            target = LocalTarget(name, s, ready_timeout=180)
            rollouts: list[dict] = []
            try:
                target.ensure_stable(good[0])
                stable = good[0]
                deadline = time.monotonic() + minutes * 60
                with Traffic(target.endpoint(), rows, clients=clients, record=True) as load:
                    time.sleep(10)  # steady state before the first rollout
                    while time.monotonic() < deadline - 90:  # room for one more rollout
                        candidate = good[1] if stable == good[0] else good[0]
                        for version in (candidate, bad):
                            t0 = time.monotonic()
                            target.deploy("canary", version)
                            state = run(target, plan("canary", version, stable, steps), policy)
                            t1 = time.monotonic()
                            rollouts.append(
                                {
                                    "version": "bad" if version == bad else f"v{version}",
                                    "outcome": state["outcome"],
                                    "from": t0,
                                    "to": t1,
                                    "phases": [h["phase"] for h in state["history"]],
                                }
                            )
                            print(f"rollout of {rollouts[-1]['version']}: {state['outcome']} in {t1 - t0:.0f}s "
                                  f"({len(load.records)} requests so far)", flush=True)  # fmt: skip
                            if state["outcome"] == "promoted":
                                stable = version
                    while time.monotonic() < deadline:
                        time.sleep(1)
                records = list(load.records)
            finally:
                target.stop_all()
    return summarize(records, rollouts, minutes, clients, policy, steps)


def summarize(records, rollouts, minutes, clients, policy, steps) -> tuple[list[dict], dict]:
    t_start = records[0][0]

    def during_rollout(t: float) -> bool:
        return any(r["from"] <= t <= r["to"] for r in rollouts)

    def row(what: str, recs: list) -> dict:
        lat = [r[1] * 1e3 for r in recs]
        failed = [r for r in recs if r[2] != 200]
        return {
            "requests": what,
            "count": len(recs),
            "failed": len(failed),
            "failed statuses": dict(sorted(Counter(str(r[2]) for r in failed).items())) or "-",
            "p50 ms": round(_pct(lat, 50), 2),
            "p99 ms": round(_pct(lat, 99), 2),
            "max ms": round(max(lat), 1) if lat else "-",
        }

    rows = [row("all", records)]
    for role in sorted({r[3] for r in records}):
        rows.append(
            row(
                f"answered by {role}" if role != "-" else "no answer from the router",
                [r for r in records if r[3] == role],
            )
        )
    rows.append(row("sent while a rollout ran", [r for r in records if during_rollout(r[0])]))
    rows.append(row("sent while no rollout ran", [r for r in records if not during_rollout(r[0])]))
    for i, r in enumerate(rollouts, 1):
        rows.append(
            {
                "requests": f"rollout {i}: {r['version']} -> {r['outcome']} after phase(s) {r['phases']} "
                f"({r['to'] - r['from']:.0f} s, from t={r['from'] - t_start:.0f} s)",
                **{
                    k: v
                    for k, v in row("", [x for x in records if r["from"] <= x[0] <= r["to"]]).items()
                    if k != "requests"
                },
            }
        )
    wall = records[-1][0] - t_start
    raw = {"wall_s": wall, "rollouts": len(rollouts), "req_per_s": len(records) / wall}
    return rows, raw


def bench_rollout_load(save=None, minutes: float = MINUTES, clients: int = CLIENTS) -> list[dict]:
    """Measure, then hand the table to ``save`` (bench/run.py's) when given."""
    from mlops.config.model import AnalysisConfig

    rows, raw = measure(minutes, clients)
    policy = AnalysisConfig(window_s=10, min_requests=50, max_wait_s=60)
    notes = (
        f"{clients} client threads (httpx, one row per POST /invocations, no pause) through the local target's "
        f"router for {raw['wall_s']:.0f} s ({raw['req_per_s']:.0f} req/s on average), while {raw['rollouts']} "
        f"canary rollouts ran back to back (steps 10/50/100 %, analysis windows of {policy.window_s:g} s, at "
        f"least {policy.min_requests} requests per window): a good version promoted, then a constant-score "
        f"version rolled back, alternating. One model server process per role (1 worker), MLflow server "
        f"from the same machine; everything on 2 shared cores, so latency includes the clients' own CPU. "
        f"'failed' = any answer but 200, or no answer; 'answered by' = the router's x-mlops-variant header."
    )
    if save is not None:
        save("rollout-load", f"python bench/run.py rollout-load  (bench/rollout_load.py: {raw['wall_s'] / 60:.0f} min, "
             f"{clients} clients)", rows, notes)  # fmt: skip
    else:
        for r in rows:
            print(r)
        print(notes)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=MINUTES)
    p.add_argument("--clients", type=int, default=CLIENTS)
    args = p.parse_args()
    bench_rollout_load(None, args.minutes, args.clients)


if __name__ == "__main__":
    main()
