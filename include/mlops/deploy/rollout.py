"""The rollout policy: one resumable state machine for canary and blue-green, on any target.

:func:`plan` makes the initial state (a JSON-safe dict); :func:`advance` does the next bit of work
against a :class:`~mlops.deploy.target.DeploymentTarget` and returns the new state plus how many
seconds to wait before calling it again (None: finished, see ``state["outcome"]``). Nothing blocks
inside, so the Airflow operator defers between calls (no worker slot held during a window) and
:func:`run` simply sleeps.

Canary (default steps 10 % -> 50 % -> 100 %): each step routes its weight to the candidate, then
analyses windows (:mod:`mlops.deploy.analysis`) until a verdict: ``pass`` -> next step; ``fail`` or no
verdict within ``max_wait_s`` (too little traffic; optionally topped up by replaying logged requests)
-> automatic rollback: all traffic back to stable, candidate removed. After the last step the candidate
becomes stable (the former stable is stopped).

Blue-green: stable's own figures are measured for one window first (the reference), then all traffic
switches to green and green is analysed against that reference; pass -> green is stable and blue stays
warm as ``previous`` (instant rollback); fail -> all traffic back to blue at once, green removed.

No stable backend (the first deployment of a model): the candidate takes all traffic right after its
smoke test; there is nothing to compare it with (recorded as such).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops.deploy.analysis import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    WAIT,
    WindowFigures,
    analyze_window,
    snapshot_from_dict,
    snapshot_to_dict,
)
from mlops.deploy.target import CANARY, GREEN, STABLE, DeploymentTarget

if TYPE_CHECKING:
    from mlops.modelconfig import AnalysisConfig

log = logging.getLogger(__name__)

PROMOTED, ROLLED_BACK = "promoted", "rolled_back"

#: ``replayer(n)``: send ``n`` recently logged requests to both stable and candidate; returns how many.
Replayer = Callable[[int], int]


def candidate_role(strategy: str) -> str:
    return GREEN if strategy == "blue_green" else CANARY


def plan(strategy: str, version: str, stable_version: str | None, steps: list[int]) -> dict[str, Any]:
    if strategy not in ("canary", "blue_green"):
        raise ValueError(f"unknown strategy {strategy!r}: canary or blue_green")
    if stable_version is None:
        phases = ["direct"]
    elif strategy == "blue_green":
        phases = ["reference", 100]
    else:
        phases = list(steps)
    return {
        "strategy": strategy,
        "role": candidate_role(strategy),
        "version": str(version),
        "stable_version": stable_version,
        "phases": phases,
        "index": 0,
        "observing": False,
        "baseline": None,
        "step_started": None,
        "reference": None,
        "reference_scores": None,
        "history": [],
        "outcome": None,
        "reasons": [],
        "replayed": 0,
    }


def advance(
    target: DeploymentTarget,
    state: dict[str, Any],
    policy: AnalysisConfig,
    replayer: Replayer | None = None,
    now: Callable[[], float] = time.time,
) -> tuple[dict[str, Any], float | None]:
    """Do the next piece of the rollout; return (state, seconds to wait) or (state, None) when done."""
    state = dict(state)
    role = state["role"]
    if state["outcome"] is not None:
        return state, None
    phase = state["phases"][state["index"]]
    if phase == "direct":
        target.set_weights({role: 100})
        target.promote(role, keep_previous=False)
        state["history"].append(
            {"phase": "direct", "decision": PASS, "reasons": ["no stable: nothing to compare"]}
        )
        return _finish(state, PROMOTED, ["first deployment of this model: the candidate took all traffic"])

    if not state["observing"]:
        if phase == "reference":
            weights = {STABLE: 100}
        else:
            weights = {role: int(phase), STABLE: 100 - int(phase)} if int(phase) < 100 else {role: 100}
        target.set_weights(weights)
        state["baseline"] = {r: snapshot_to_dict(target.snapshot(r)) for r in (role, STABLE)}
        state["observing"] = True
        state["step_started"] = now()
        state["replayed_step"] = 0
        log.info(
            "rollout v%s: %s -> weights %s; analysing for %.0fs",
            state["version"],
            phase,
            weights,
            policy.window_s,
        )
        return state, policy.window_s

    t = now()
    base = {r: snapshot_from_dict(d) for r, d in state["baseline"].items()}
    try:
        cur = {r: target.snapshot(r) for r in (role, STABLE)}
    except Exception as exc:  # noqa: BLE001 - an unreadable backend is a failed analysis, not a crash
        return _rollback(target, state, [f"step {phase}: metrics unreadable: {exc}"])
    delta = {r: cur[r].minus(base[r]) for r in cur}
    seconds = t - state["step_started"]
    if phase == "reference":
        fig = WindowFigures.of(delta[STABLE], seconds)
        enough = fig.requests >= policy.min_requests
        if not enough and seconds < policy.max_wait_s:
            return state, min(policy.window_s, policy.max_wait_s - seconds)
        state["reference"] = fig.__dict__ if enough else None
        state["reference_scores"] = (
            {repr(k): v for k, v in delta[STABLE].score_buckets.items()} if enough else None
        )
        state["history"].append(
            {
                "phase": "reference",
                "decision": PASS,
                "reasons": [
                    f"stable: {fig.requests:.0f} requests, p95 {fig.p95_ms} ms"
                    if enough
                    else f"stable took only {fig.requests:.0f} requests: green is judged on absolute bounds"
                ],
                "stable": fig.__dict__,
                "seconds": round(seconds, 1),
            }
        )
        return _next(target, state, policy, replayer, now)

    stable_weight = 100 - int(phase)
    reference = WindowFigures(**state["reference"]) if state.get("reference") else None
    ref_scores = (
        {float(k): v for k, v in state["reference_scores"].items()} if state.get("reference_scores") else None
    )
    verdict = analyze_window(
        delta[role],
        delta[STABLE] if stable_weight > 0 else None,
        policy,
        seconds,
        reference=reference,
        reference_scores=ref_scores,
    )
    if verdict.decision == WAIT:
        remaining = policy.max_wait_s - seconds
        if remaining > 0:
            if replayer is not None and policy.replay:
                need = int(policy.min_requests - verdict.canary.requests)
                sent = replayer(need)
                state["replayed"] += sent
                log.info(
                    "rollout v%s: replayed %d logged requests to stable and candidate", state["version"], sent
                )
            return state, min(policy.window_s, remaining)
        state["history"].append({"phase": phase, **verdict.to_dict(), "decision": INCONCLUSIVE})
        return _rollback(
            target,
            state,
            [
                f"step {phase}%: inconclusive after {seconds:.0f}s: {verdict.reasons[0]} "
                "(too little traffic to judge; nothing was promoted)"
            ],
        )
    state["history"].append({"phase": phase, **verdict.to_dict()})
    if verdict.decision == FAIL:
        return _rollback(target, state, [f"step {phase}%: " + "; ".join(verdict.reasons)])
    if verdict.stable is not None:
        state["reference"] = verdict.stable.__dict__
        state["reference_scores"] = {repr(k): v for k, v in delta[STABLE].score_buckets.items()}
    log.info("rollout v%s: step %s%% passed: %s", state["version"], phase, "; ".join(verdict.reasons))
    return _next(target, state, policy, replayer, now)


def _next(target, state, policy, replayer, now):
    state["index"] += 1
    state["observing"] = False
    state["baseline"] = None
    if state["index"] >= len(state["phases"]):
        keep = state["strategy"] == "blue_green"
        target.promote(state["role"], keep_previous=keep)
        return _finish(
            state,
            PROMOTED,
            [
                "every analysis window passed"
                + ("; the former stable stays warm as `previous`" if keep else "")
            ],
        )
    return advance(target, state, policy, replayer, now)


def _rollback(target: DeploymentTarget, state: dict[str, Any], reasons: list[str]):
    role = state["role"]
    try:
        target.set_weights({STABLE: 100})
    finally:
        target.remove(role)
    log.warning("rollout v%s rolled back: %s", state["version"], "; ".join(reasons))
    return _finish(state, ROLLED_BACK, reasons)


def _finish(state: dict[str, Any], outcome: str, reasons: list[str]):
    state["outcome"] = outcome
    state["reasons"] = reasons
    state["observing"] = False
    state["baseline"] = None
    return state, None


def run(
    target: DeploymentTarget,
    state: dict[str, Any],
    policy: AnalysisConfig,
    replayer: Replayer | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Drive the rollout to its end in this process (CLI, tests); the Airflow operator defers instead."""
    while True:
        state, wait = advance(target, state, policy, replayer)
        if wait is None:
            return state
        sleep(wait)
