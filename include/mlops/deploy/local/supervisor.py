"""Supervision of the local target: a crashed router or model server is restarted, within bounds.

One ``mlops supervise`` process per model endpoint (``$MLOPS_HOME/serving/<model>/supervisor.pid``),
started with the router. Every second it compares the routing table with the processes: a backend
or router whose process is gone is restarted on the same port, with the same arguments, after a
backoff (at once, then 1, 2, 4 ... up to 30 s); after ``max_restarts`` restarts within ``window_s``
it gives up on that process and marks it ``failed``. Meanwhile the router keeps sending requests to
the remaining backends (a connection failure is retried on another one). Restarts are recorded in the
routing table (``restarts``, ``last_restart``, ``state`` per backend; ``router`` for the router), in
the supervisor's log, and shown by ``make status``.

Restarts happen under the routing table's lock, so a backend being removed by a rollout is never
brought back: only what the table holds at that moment is supervised.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.deploy.local.target import LocalTarget

log = logging.getLogger(__name__)

ROUTER = "router"  # the key of the router among the supervised processes


@dataclass(frozen=True)
class RestartPolicy:
    """How eagerly and how often a crashed process is restarted."""

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 600.0

    def delay(self, recent_restarts: int) -> float:
        """Wait before the next restart: none for the first crash, then doubling up to the maximum."""
        if recent_restarts <= 0:
            return 0.0
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** (recent_restarts - 1))


@dataclass
class _Track:
    """What the supervisor remembers about one process between checks."""

    restarts: deque[float] = field(default_factory=deque)  # monotonic times of recent restarts
    due: float | None = None  # when the pending restart may happen; None while the process runs
    given_up: bool = False


class Supervisor:
    """Checks the router and every backend of one local target; restarts what crashed."""

    def __init__(self, target: LocalTarget, policy: RestartPolicy | None = None, clock=time.monotonic):
        self.target = target
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self._tracks: dict[str, _Track] = {}

    def check(self) -> list[str]:
        """One pass: returns what happened (``"restarted stable"``, ``"gave up on canary"``, ...)."""
        events: list[str] = []
        now = self.clock()
        with self.target.table(keep_dead=True) as state:
            rec = state.setdefault(ROUTER, {})
            events += self._one(ROUTER, rec, self.target.router_running(), now, self.target.restart_router)
            live = set(state["backends"])
            for key in list(self._tracks):
                if key != ROUTER and key not in live:
                    del self._tracks[key]  # removed by a rollout: forget its history
            for role, b in state["backends"].items():
                alive = self.target.backend_alive(b)
                events += self._one(
                    role, b, alive, now, lambda r=role, b=b: self.target.restart_backend(r, b)
                )
        return events

    def _one(self, key: str, rec: dict[str, Any], alive: bool, now: float, restart) -> list[str]:
        track = self._tracks.setdefault(key, _Track())
        while track.restarts and now - track.restarts[0] > self.policy.window_s:
            track.restarts.popleft()
        what = self._describe(key, rec)
        if alive:
            track.due, track.given_up = None, False
            if rec.get("state") != "running":
                rec["state"] = "running"
            return []
        if track.given_up:
            return []
        if len(track.restarts) >= self.policy.max_restarts:
            track.given_up = True
            rec["state"] = "failed"
            log.error(
                "%s exited again after %d restarts within %.0f s: giving up on it (see its log %s); "
                "the router keeps serving from the other backends",
                what, len(track.restarts), self.policy.window_s, rec.get("log", ""),
            )  # fmt: skip
            return [f"gave up on {key}"]
        if track.due is None:
            delay = self.policy.delay(len(track.restarts))
            track.due = now + delay
            rec["state"] = "restarting"
            log.warning("%s is not running; restarting it in %.0f s", what, delay)
        if now < track.due:
            return []
        try:
            restart()
        except OSError as exc:  # e.g. the port was taken meanwhile: try again after the next backoff
            track.restarts.append(now)
            track.due = None
            log.warning("%s could not be restarted (%s); will retry", what, exc)
            return [f"failed to restart {key}"]
        track.restarts.append(now)
        track.due = None
        rec["restarts"] = int(rec.get("restarts", 0)) + 1
        rec["last_restart"] = datetime.now(UTC).isoformat(timespec="seconds")
        rec["state"] = "running"
        log.info("%s restarted (restart %d, %d within %.0f s)", what, rec["restarts"],
                 len(track.restarts), self.policy.window_s)  # fmt: skip
        return [f"restarted {key}"]

    def _describe(self, key: str, rec: dict[str, Any]) -> str:
        model = self.target.model
        if key == ROUTER:
            return f"{model} router on port {self.target.port}"
        return f"{model} {key} (v{rec.get('version')}) on {rec.get('url')}"


def run(target: LocalTarget, interval: float = 1.0, policy: RestartPolicy | None = None) -> int:
    """Supervise ``target`` until SIGTERM."""
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # what it restarts is reaped when it exits: no zombies
    sup = Supervisor(target, policy)
    log.info("supervising the %s endpoint (port %d) and its backends", target.model, target.port)
    while not stopping:
        try:
            sup.check()
        except Exception:  # noqa: BLE001 - the supervisor must outlive a bad pass (e.g. a half-written table)
            log.exception("supervision pass failed; next pass in %.0f s", interval)
        time.sleep(interval)
    log.info("supervisor of %s stopped", target.model)
    return 0
