"""The rollout as a deferrable operator: no worker slot is held while an analysis window runs.

Each call of :func:`mlops.deploy.rollout.advance` does a short piece of work (route traffic, read
metrics, judge a window); between calls the task defers on :class:`RolloutWaitTrigger`, which carries the
rollout state (plain JSON) and returns it in its event. The end: promoted -> the record is written,
``@champion`` moves (the former becomes ``@previous``), then the candidate becomes stable; while the
registry is unreachable the task defers and retries with all traffic on stable; rolled back -> traffic is
already back on stable, the candidate is removed, ``@champion`` untouched, and the task fails with the
reasons.

The task log reads one line per rollout step and analysis window (written by :mod:`mlops.deploy.rollout`),
never the rollout state: the trigger and its event print a one-line summary of it (the triggerer logs
both), while the state itself still travels whole in the event.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


def summary(state: dict[str, Any] | None) -> str:
    """A rollout state in a few words (for reprs and logs): ``rollout v2 step 50%, window 3``."""
    if not isinstance(state, dict):
        return "rollout (no state)"
    text = f"rollout v{state.get('version')}"
    phases, index = state.get("phases") or [], state.get("index", 0)
    if state.get("outcome"):
        return f"{text} {state['outcome']}"
    if isinstance(index, int) and 0 <= index < len(phases):
        phase = phases[index]
        text += f" step {phase}%" if isinstance(phase, int) else f" {phase}"
    if state.get("window"):
        text += f", window {state['window']}"
    return text


class RolloutEvent(TriggerEvent):
    """The trigger's event: the state as payload, a one-line summary as repr (the triggerer logs it)."""

    def __repr__(self) -> str:
        payload = self.payload if isinstance(self.payload, dict) else {}
        return f"TriggerEvent<{summary(payload.get('state'))}: analysis window due>"

    __str__ = __repr__


class RolloutWaitTrigger(BaseTrigger):
    """Waits one analysis window in the triggerer and hands the rollout state back in its event.

    (The state travels in the event, not in the deferral's kwargs, so it survives every resume path,
    ``dag.test()``'s in-line triggers included.)
    """

    def __init__(self, seconds: float, state: dict[str, Any]) -> None:
        super().__init__()
        self.seconds = float(seconds)
        self.state = state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "seconds": self.seconds,
            "state": self.state,
        }

    def __repr__(self) -> str:
        return f"<RolloutWaitTrigger {summary(self.state)}: next analysis in {self.seconds:.0f} s>"

    async def run(self):
        import asyncio

        await asyncio.sleep(self.seconds)
        yield RolloutEvent({"state": self.state})


class RolloutOperator(BaseOperator):
    """Canary or blue-green rollout of ``candidate["version"]`` for one model config."""

    template_fields = ("candidate", "strategy", "steps")

    def __init__(self, *, model: str, candidate: Any, strategy: Any, steps: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.candidate = candidate
        self.strategy = strategy
        self.steps = steps

    def _cfg(self):
        from mlops.config import defaults
        from mlops.config.model import get_model_config

        return get_model_config(self.model, defaults.models_dir())

    def execute(self, context: Any) -> Any:
        from mlops.deploy.rollout import plan

        c = self.candidate
        steps = [int(w) for w in (self.steps or self._cfg().deployment.steps)]
        state = plan(str(self.strategy), c["version"], c["stable_version"], steps)
        state["analysis_overrides"] = c.get("analysis_overrides") or {}
        self.log.info("rollout of %s v%s (%s, steps %s) against stable v%s", self.model, c["version"],
                      self.strategy, steps, c["stable_version"])  # fmt: skip
        p = self._policy(self._cfg())
        self.log.info(
            "analysis: windows of %.0f s, %d canary requests per verdict, wait at most %.0f s, replay %s, "
            "promotion on replayed traffic alone %s; overrides of this run: %s",
            p.window_s,
            p.min_requests,
            p.max_wait_s,
            "on" if p.replay else "off",
            "allowed" if p.allow_replay_only else "refused",
            ", ".join(f"{k}={v}" for k, v in state["analysis_overrides"].items()) or "none",
        )
        return self._advance(context, state)

    def _policy(self, cfg: Any):
        from mlops.config.model import AnalysisConfig

        if self.candidate.get("analysis"):
            return AnalysisConfig(**self.candidate["analysis"])
        return cfg.deployment.analysis

    def resume(self, context: Any, event: Any = None) -> Any:
        return self._advance(context, event["state"])

    def _advance(self, context: Any, state: dict[str, Any]) -> Any:
        from airflow.sdk.exceptions import AirflowFailException
        from mlops.deploy import rollout, service

        from mlops_airflow.hooks import MlflowHook

        cfg = self._cfg()
        uri = MlflowHook().tracking_uri()
        target = service.make_target(cfg, uri)
        policy = self._policy(cfg)
        # advance() logs one line per step and window itself (mlops.deploy.rollout): nothing to add here
        state, wait = rollout.advance(target, state, policy, service.replayer(cfg, target))
        if wait is not None:
            self.defer(
                trigger=RolloutWaitTrigger(wait, state),
                method_name="resume",
                timeout=timedelta(seconds=wait + 600),
            )
        # the record and aliases first, traffic for good after; registry away -> held on stable, retried
        state, result, retry = service.conclude(cfg, uri, target, state)
        if retry is not None:
            self.defer(
                trigger=RolloutWaitTrigger(retry, state),
                method_name="resume",
                timeout=timedelta(seconds=retry + 600),
            )
        assert result is not None
        if state["outcome"] != rollout.PROMOTED:
            raise AirflowFailException(
                f"ROLLED BACK: {cfg.name} v{state['version']} — "
                + "; ".join(state["reasons"])
                + f". All traffic is on stable v{state['stable_version']}; @champion unchanged."
            )
        self.log.info(
            "PROMOTED: %s v%s is @champion (previous: %s)", cfg.name, state["version"], result["previous"]
        )
        return {**result, "outcome": state["outcome"], "reasons": state["reasons"]}
