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

Live and replayed traffic: replayed requests go straight to every backend (stable and candidate), so a
window's candidate requests are ``live`` (routed by weight from real clients) plus ``replayed`` (counted
per step in ``state["replayed_step"]``); every window records both. A window that no live request
reached never passes (replay alone proves only that the candidate answers logged requests): it keeps
waiting for live traffic until ``max_wait_s``, then it is inconclusive -> rollback, unless the policy's
``allow_replay_only`` says replayed traffic may decide.

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
    from mlops.config.model import AnalysisConfig

log = logging.getLogger(__name__)

PROMOTED, ROLLED_BACK = "promoted", "rolled_back"

#: ``replayer(n)``: send ``n`` recently logged requests straight to stable and candidate; returns how many
#: reached the candidate (the rollout counts them per step to tell live traffic from replayed).
Replayer = Callable[[int], int]


def candidate_role(strategy: str) -> str:
    """The role a candidate is deployed in: ``green`` for blue-green, ``canary`` otherwise."""
    return GREEN if strategy == "blue_green" else CANARY


def plan(strategy: str, version: str, stable_version: str | None, steps: list[int]) -> dict[str, Any]:
    """The state of a new rollout: the phases to walk (``direct`` when there is no stable yet), none done."""
    if strategy not in ("canary", "blue_green"):
        raise ValueError(f"unknown strategy {strategy!r}: canary or blue_green")
    phases: list[str | int]
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
    # Long by design, the rollout state machine: one branch per phase, kept together so every transition is
    # visible in one place (tests/unit/test_rollout.py drives each one).
    state = dict(state)
    role = state["role"]
    if state["outcome"] is not None:
        return state, None
    state["allow_replay_only"] = bool(policy.allow_replay_only)  # recorded with the outcome
    phase = state["phases"][state["index"]]
    if phase == "direct":
        target.set_weights({role: 100})
        entry: dict[str, Any] = {
            "phase": "direct",
            "decision": PASS,
            "reasons": ["no stable: nothing to compare"],
        }
        state["history"].append(entry)
        log.info("%s", describe_window(entry))
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
        state["window"] = 0
        split = ", ".join(f"{r} {w}%" for r, w in weights.items())
        log.info(
            "%s: traffic %s; first analysis window %.0f s (rollout of v%s against stable v%s)",
            _step_name(phase),
            split,
            policy.window_s,
            state["version"],
            state["stable_version"],
        )
        return state, policy.window_s

    t = now()
    state["window"] = int(state.get("window", 0)) + 1
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
            log.info(
                "%s",
                describe_window(
                    {
                        "phase": "reference",
                        "window": state["window"],
                        "stable": fig.__dict__,
                        "decision": WAIT,
                    },
                    detail=f"only {fig.requests:.0f} stable requests of {policy.min_requests}",
                ),
            )
            return state, min(policy.window_s, policy.max_wait_s - seconds)
        state["reference"] = fig.__dict__ if enough else None
        state["reference_scores"] = (
            {repr(k): v for k, v in delta[STABLE].score_buckets.items()} if enough else None
        )
        entry = {
            "phase": "reference",
            "window": state["window"],
            "decision": PASS,
            "reasons": [
                f"stable: {fig.requests:.0f} requests, p95 {fig.p95_ms} ms"
                if enough
                else f"stable took only {fig.requests:.0f} requests: green is judged on absolute bounds"
            ],
            "stable": fig.__dict__,
            "seconds": round(seconds, 1),
        }
        state["history"].append(entry)
        log.info("%s", describe_window(entry))
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
    replayed = int(state.get("replayed_step", 0))
    live = live_requests(verdict.canary.requests, replayed)
    entry = {
        "phase": phase,
        "window": state["window"],
        **verdict.to_dict(),
        "live": live,
        "replayed": replayed,
    }
    no_live = no_live_reason(replayed)
    # Replayed traffic alone never passes a window unless the policy allows it; a failure on replayed
    # traffic is a real failure (the candidate mishandled requests that clients did send).
    held = verdict.decision == PASS and live == 0 and not policy.allow_replay_only
    if verdict.decision == WAIT or held:
        remaining = policy.max_wait_s - seconds
        if remaining > 0:
            detail = (
                f"{no_live}; waiting for live traffic (allow_replay_only is off), {remaining:.0f} s left"
                if held
                else f"{verdict.reasons[0]}, {remaining:.0f} s left"
            )
            need = int(policy.min_requests - verdict.canary.requests)
            if replayer is not None and policy.replay and need > 0:
                sent = int(replayer(need))
                state["replayed"] = int(state.get("replayed", 0)) + sent
                state["replayed_step"] = replayed + sent
                detail += f"; replayed {sent} logged requests to stable and candidate"
            waiting = {**entry, "decision": WAIT}
            log.info("%s", describe_window(waiting, state.get("reference"), detail, candidate=role))
            return state, min(policy.window_s, remaining)
        if held:
            why = no_live
            entry["reasons"] = [no_live, "replayed traffic alone would have passed: " + verdict.reasons[0]]
        elif live == 0 and replayed > 0:
            why = f"{no_live}; {verdict.reasons[0]}"
            entry["reasons"] = [no_live, *verdict.reasons]
        else:
            why = verdict.reasons[0]
        entry["decision"] = INCONCLUSIVE
        state["history"].append(entry)
        log.warning("%s", describe_window(entry, reference=state.get("reference"), candidate=role))
        return _rollback(
            target,
            state,
            [
                f"step {phase}%: inconclusive after {seconds:.0f}s: {why} "
                + (
                    "(replayed requests alone may not promote: allow_replay_only is off; nothing was promoted)"
                    if held
                    else "(too little traffic to judge; nothing was promoted)"
                )
            ],
        )
    if verdict.decision == PASS and live == 0:
        entry["reasons"] = [
            *entry["reasons"],
            f"no live request reached the candidate: passed on {replayed} replayed requests alone "
            "(allow_replay_only)",
        ]
    state["history"].append(entry)
    if verdict.decision == FAIL:
        log.warning("%s", describe_window(entry, reference=state.get("reference"), candidate=role))
        return _rollback(target, state, [f"step {phase}%: " + "; ".join(verdict.reasons)])
    log.info("%s", describe_window(entry, reference=state.get("reference"), candidate=role))
    if verdict.stable is not None:
        state["reference"] = verdict.stable.__dict__
        state["reference_scores"] = {repr(k): v for k, v in delta[STABLE].score_buckets.items()}
    return _next(target, state, policy, replayer, now)


def live_requests(candidate_requests: float, replayed: int) -> int:
    """Live candidate requests of a window: its request count minus what was replayed to it (never < 0).

    Counters are whole numbers (floats only because Prometheus says so), so the difference is exact."""
    return max(0, round(candidate_requests) - int(replayed))


def no_live_reason(replayed: int) -> str:
    """Why a window did not count: only replayed traffic reached the candidate."""
    return f"no live request reached the candidate ({replayed} replayed)"


def _step_name(phase: Any) -> str:
    if phase == "reference":
        return "blue-green reference"
    if phase == "direct":
        return "first deployment"
    return f"step {phase}%"


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.0f}"


def _ms(x: Any) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    return f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"


def describe_window(
    entry: dict[str, Any],
    reference: dict[str, Any] | None = None,
    detail: str | None = None,
    candidate: str = "canary",
) -> str:
    """One readable log line for one analysis window (a ``state["history"]`` entry, or one still waiting).

    e.g. ``step 10%: window 1 — canary 57 req (52 live, 5 replayed), stable 480 req, p95 12 ms vs 11 ms,
    errors 0 vs 1, score shift 0.04 → pass``. ``reference``: stable figures of an earlier window, used
    when stable took no traffic in this one. ``detail`` replaces the entry's reasons after the decision;
    ``candidate`` names the candidate's role (``green`` in a blue-green rollout).
    """
    phase = entry.get("phase")
    head = _step_name(phase) + (f": window {entry['window']}" if entry.get("window") else "")
    decision = entry.get("decision", "?")
    reasons = entry.get("reasons") or []
    if phase == "direct":
        return f"{head} — no stable version to compare with → promoted directly"
    parts: list[str] = []
    canary, stable = entry.get("canary"), entry.get("stable")
    if isinstance(canary, dict):
        parts.append(
            f"{candidate} {_num(canary.get('requests'))} req "
            f"({entry.get('live', 0)} live, {entry.get('replayed', 0)} replayed)"
        )
    base, against = stable, ""
    if isinstance(stable, dict):
        parts.append(f"stable {_num(stable.get('requests'))} req")
    elif isinstance(canary, dict) and reference:
        base, against = reference, " (reference)"
        parts.append("stable idle")
    if isinstance(canary, dict):
        p95 = f"p95 {_ms(canary.get('p95_ms'))}"
        errors = f"errors {_num(canary.get('errors'))}"
        if isinstance(base, dict):
            p95 += f" vs {_ms(base.get('p95_ms'))}{against}"
            errors += f" vs {_num(base.get('errors'))}"
        parts += [p95, errors]
        if entry.get("score_shift") is not None:
            parts.append(f"score shift {entry['score_shift']:.2f}")
    elif isinstance(stable, dict):
        parts += [f"p95 {_ms(stable.get('p95_ms'))}", f"errors {_num(stable.get('errors'))}"]
    why = detail if detail is not None else ("; ".join(reasons) if decision != PASS else "")
    return f"{head} — {', '.join(parts)} → {decision}" + (f": {why}" if why else "")


def _next(target, state, policy, replayer, now):
    state["index"] += 1
    state["observing"] = False
    state["baseline"] = None
    if state["index"] >= len(state["phases"]):
        keep = state["strategy"] == "blue_green"
        log.info("rollout v%s: every analysis window passed; promoted once recorded", state["version"])
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
    log.warning(
        "rollout v%s rolled back (all traffic on stable v%s, %s removed): %s",
        state["version"],
        state["stable_version"],
        role,
        "; ".join(reasons),
    )
    return _finish(state, ROLLED_BACK, reasons)


def _finish(state: dict[str, Any], outcome: str, reasons: list[str]):
    state["outcome"] = outcome
    state["reasons"] = reasons
    state["observing"] = False
    state["baseline"] = None
    return state, None


def complete(target: DeploymentTarget, state: dict[str, Any]) -> dict[str, Any]:
    """Switch traffic for good once the outcome is recorded: a promoted candidate becomes stable.

    :func:`advance` ends a passed rollout with the candidate taking its last step's traffic but not yet
    stable, so the registry record (and ``@champion``) can be written first
    (:func:`mlops.deploy.service.conclude`); until then :func:`hold` keeps traffic on stable.
    Idempotent; a rolled-back rollout has nothing to complete.
    """
    if state["outcome"] == PROMOTED and not state.get("switched"):
        keep = state["strategy"] == "blue_green" and state["phases"] != ["direct"]
        target.promote(state["role"], keep_previous=keep)
        state["switched"] = True
        log.info(
            "v%s promoted: stable now%s",
            state["version"],
            "; the former stable stays warm as `previous`" if keep else "",
        )
    return state


def hold(target: DeploymentTarget, state: dict[str, Any]) -> None:
    """While a promotion cannot be recorded: all traffic on stable (when there is one), candidate kept."""
    pending = state["outcome"] == PROMOTED and not state.get("switched") and state.get("stable_version")
    if pending and target.weights().get(STABLE) != 100:
        target.set_weights({STABLE: 100})
        log.warning("v%s passed but is not recorded yet: all traffic back on stable", state["version"])


def run(
    target: DeploymentTarget,
    state: dict[str, Any],
    policy: AnalysisConfig,
    replayer: Replayer | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Drive the rollout to its end in this process (CLI, tests; nothing recorded); the operator defers."""
    while True:
        state, wait = advance(target, state, policy, replayer)
        if wait is None:
            return complete(target, state)
        sleep(wait)
