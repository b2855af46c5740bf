"""Soak: the platform left alone for hours with client traffic and a drift injected every N minutes.

    python bench/run.py soak            # fresh clone, `make demo`, then the soak below, then `make down`
    python bench/soak.py drive --hours 2 --period-minutes 20 --out FILE   # the driver, inside a stack

The driver (run with the clone's own venv, on the stack `make demo` left up) keeps one client sending
normal traffic to the endpoint the whole time and, every ``--period-minutes``, runs one closed loop
(``mlops.demo.loop.run_loops`` with one cycle: the population moves, is detected, alerts, retrains,
canaries, promotes). Between loops the platform runs by itself: hourly drift checks, checks after each
promotion, alerts on the background traffic, storm protection. It records:

* each loop's outcome and legs;
* the alert ledger at the end: retrains started, alerts suppressed by reason;
* the scheduler's log lines per minute (a spinning scheduler, like the stuck continuous DAG of issue 10,
  logs a line every second);
* RSS of every long-running process of the stack at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _stack_processes(home: Path) -> dict[int, str]:
    """PID -> role of every long-running service of the stack at ``home``, from its pid files.

    Pid files, not command lines: Airflow's api-server and workers retitle themselves (setproctitle),
    which also hides their environment. Model servers are left out: each promotion replaces them.
    """
    from mlops.deploy.local.procs import read_pid  # the stack's own reader (alive and not a reused pid)

    found: dict[int, str] = {}
    pidfiles = [*sorted((home / "run").glob("*.pid")), *sorted((home / "serving").glob("*/router.pid"))]
    for f in pidfiles:
        pid = read_pid(f)
        if pid is not None:
            found[pid] = f"router ({f.parent.name})" if f.name == "router.pid" else f.stem
    return found


def _rss_mb(pids: dict[int, str]) -> dict[str, dict[str, Any]]:
    """RSS of each service with all its child processes (workers, trigger runner, MLflow's uvicorn)."""
    import psutil

    out = {}
    for pid, role in pids.items():
        try:
            proc = psutil.Process(pid)
            tree = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        out[str(pid)] = {"role": role, "processes": len(tree), "rss_mb": round(rss / 2**20, 1)}
    return out


def _log_lines_per_minute(log: Path, since: float, until: float) -> dict[str, Any]:
    stamp = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})")
    per_minute: Counter[str] = Counter()
    skipping = 0
    lo = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M")
    hi = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M")
    for line in log.read_text(errors="replace").splitlines():
        m = stamp.match(line)
        if not m:
            continue
        minute = f"{m.group(1)} {m.group(2)}"
        if lo <= minute <= hi:
            per_minute[minute] += 1
            skipping += "already exists; skipping" in line
    # every minute of the window counts, the quiet ones too (a spinning scheduler has no quiet minute)
    minutes = max(1, int((until - since) // 60))
    counts = sorted(per_minute.values()) + [0] * max(0, minutes - len(per_minute))
    busy = sorted(per_minute.values()) or [0]
    return {"median": statistics.median(counts), "max": max(counts), "minutes": minutes,
            "minutes_with_lines": len(per_minute), "median_of_minutes_with_lines": statistics.median(busy),
            "run_already_exists_lines": skipping}  # fmt: skip


def drive(hours: float, period_minutes: float, cooldown_minutes: float, out: Path) -> int:
    from mlops.alerting import open_ledger
    from mlops.config.model import get_model_config
    from mlops.config.settings import get_settings
    from mlops.demo.acts import land_good
    from mlops.demo.airflow_api import AirflowAPI
    from mlops.demo.datagen import generate
    from mlops.demo.loop import run_loops
    from mlops.demo.traffic import Traffic

    s = get_settings()
    model = s.serving_model
    cfg = get_model_config(model, s.models_dir)
    api = AirflowAPI(s.airflow_url, s.admin_user, s.admin_password.get_secret_value())
    endpoint = f"http://{s.host}:{s.serving_port}"
    rows = json.loads(generate(model, rows=300, seed=5)[cfg.features.all].to_json(orient="records"))
    t0 = time.time()
    start_pids = _stack_processes(s.home)
    rss_start = _rss_mb(start_pids)
    ledger = open_ledger(s.home)
    ledger_before = {e["key"] for e in ledger.entries(model, 100_000)}
    loops: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(60.0):
            samples.append({"t": round(time.time() - t0), "rss": _rss_mb(_stack_processes(s.home))})

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    print(
        f"soak: {hours:g} h, a loop every {period_minutes:g} min, background traffic to {endpoint}",
        flush=True,
    )
    with Traffic(endpoint, rows, clients=1, pause=0.2) as background:
        i = 0
        while time.time() - t0 < hours * 3600:
            started = time.time()
            i += 1
            print(f"\n== soak loop {i} at +{(started - t0) / 60:.1f} min", flush=True)
            try:
                res = run_loops(api, s, model, 900, land_good, cycles=1, cooldown_minutes=cooldown_minutes)
                summary = json.loads(res.summary.read_text()) if res.summary else {}
                loops.append({"loop": i, "at_min": round((started - t0) / 60, 1), "ok": res.ok,
                              "problem": res.problem, "cycles": summary.get("cycles", [])})  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a soak records a broken loop and goes on
                loops.append({"loop": i, "at_min": round((started - t0) / 60, 1), "ok": False,
                              "problem": f"{type(exc).__name__}: {exc}", "cycles": []})  # fmt: skip
            print(
                f"   loop {i}: {'closed' if loops[-1]['ok'] else 'NOT closed: ' + loops[-1]['problem']}",
                flush=True,
            )
            wait = started + period_minutes * 60 - time.time()
            if wait > 0 and time.time() + wait - t0 < hours * 3600:
                time.sleep(wait)
    stop.set()
    end = time.time()
    rss_end = _rss_mb(_stack_processes(s.home))
    long_running = {
        pid: {**rss_start[pid], "rss_mb_end": rss_end[pid]["rss_mb"],
              "growth": round(rss_end[pid]["rss_mb"] / rss_start[pid]["rss_mb"] - 1, 3)}
        for pid in rss_start if pid in rss_end
    }  # fmt: skip
    entries = [e for e in ledger.entries(model, 100_000) if e["key"] not in ledger_before]
    reasons = Counter(
        (e["reason"] or "pending").split(":")[0].split(" (")[0] for e in entries if e["decision"] != "retrain"
    )
    data = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hours": round((end - t0) / 3600, 2),
        "period_minutes": period_minutes,
        "cooldown_minutes": cooldown_minutes,
        "loops_attempted": len(loops),
        "loops_closed": sum(lp["ok"] for lp in loops),
        "background_traffic": {
            "ok": background.ok,
            "failed": len(background.failed),
            "by_version": background.by_version,
        },  # fmt: skip
        "alerts": {
            "received": len(entries),
            "retrains_started": sum(e["decision"] == "retrain" for e in entries),
            "suppressed_by_reason": dict(reasons),
        },  # fmt: skip
        "scheduler_log_lines_per_minute": _log_lines_per_minute(s.home / "logs" / "scheduler.log", t0, end),
        "memory": long_running,
        "memory_max_growth": max((p["growth"] for p in long_running.values()), default=None),
        "samples": samples,
        "loops": loops,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"\nsoak done: {data['loops_closed']} of {data['loops_attempted']} loops closed; {out}", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drive", help="run the soak against the stack of this checkout's settings")
    d.add_argument("--hours", type=float, default=2.0)
    d.add_argument("--period-minutes", type=float, default=20.0)
    d.add_argument(
        "--cooldown-minutes", type=float, default=15.0, help="storm protection's cooldown meanwhile"
    )
    d.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    return drive(a.hours, a.period_minutes, a.cooldown_minutes, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
