"""The rollout as a deferrable operator: no worker slot is held while an analysis window runs.

Each call of :func:`mlops.deploy.rollout.advance` does a short piece of work (route traffic, read
metrics, judge a window); between calls the task defers on :class:`RolloutWaitTrigger`, which carries the
rollout state (plain JSON) and returns it in its event. The end: promoted -> ``@champion`` moves (the
former becomes ``@previous``); rolled back -> traffic is already back on stable, the candidate is
removed, ``@champion`` untouched, and the task fails with the reasons.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


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

    async def run(self):
        import asyncio

        await asyncio.sleep(self.seconds)
        yield TriggerEvent({"state": self.state})


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
        from mlops import defaults
        from mlops.modelconfig import get_model_config

        return get_model_config(self.model, defaults.models_dir())

    def execute(self, context: Any) -> Any:
        from mlops.deploy.rollout import plan

        c = self.candidate
        steps = [int(w) for w in (self.steps or self._cfg().deployment.steps)]
        state = plan(str(self.strategy), c["version"], c["stable_version"], steps)
        state["analysis_overrides"] = c.get("analysis_overrides") or {}
        self.log.info("rollout of %s v%s (%s, steps %s) against stable v%s", self.model, c["version"],
                      self.strategy, steps, c["stable_version"])  # fmt: skip
        return self._advance(context, state)

    def resume(self, context: Any, event: Any = None) -> Any:
        return self._advance(context, event["state"])

    def _advance(self, context: Any, state: dict[str, Any] | None) -> Any:
        from airflow.sdk.exceptions import AirflowFailException
        from mlops.deploy import rollout, service

        from mlops_airflow.hooks import MlflowHook

        cfg = self._cfg()
        uri = MlflowHook().tracking_uri()
        target = service.make_target(cfg, uri)
        from mlops.modelconfig import AnalysisConfig

        policy = (
            AnalysisConfig(**self.candidate["analysis"])
            if self.candidate.get("analysis")
            else cfg.deployment.analysis
        )
        state, wait = rollout.advance(target, state, policy, service.replayer(cfg, target))
        for h in state["history"][len(state.get("_logged", [])) :]:
            self.log.info("window %s: %s — %s", h["phase"], h["decision"], "; ".join(h.get("reasons", [])))
        state["_logged"] = [h["phase"] for h in state["history"]]
        if wait is not None:
            self.defer(
                trigger=RolloutWaitTrigger(wait, state),
                method_name="resume",
                timeout=timedelta(seconds=wait + 600),
            )
        result = service.finish(cfg, uri, state)
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
