"""Alert-driven retraining in Airflow: a deferrable sensor that waits, in the triggerer, for alerts.

:class:`AlertWaitTrigger` polls the configured alert source (Alertmanager, Prometheus or the local
rule evaluator) every ``poll_interval`` seconds, records every firing alert of its model in the
:class:`~mlops.alerting.ledger.AlertLedger` (once per firing), and checks the ledger every second: an alert
pending a decision, whether it came from the source or from the webhook receiver, ends the wait. An
unreachable source is logged and retried with exponential backoff (up to a minute): the trigger
never fails because of it. After ``max_wait_s`` without an alert it ends quietly so the next run of
the (continuous) retraining DAG starts fresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)


def source_config(settings: Any) -> dict[str, str]:
    """Which alert source this deployment uses (MLOPS_ALERT_SOURCE, resolved by `make up`)."""
    return {
        "kind": settings.alert_source or "local",
        "alertmanager_url": settings.alertmanager_url,
        "prometheus_url": settings.prometheus_url,
    }


def _source(cfg: dict[str, str]):
    from mlops.alerting import make_source
    from mlops.config import resources
    from mlops.config.settings import get_settings

    return make_source(
        cfg["kind"],
        alertmanager_url=cfg["alertmanager_url"],
        prometheus_url=cfg["prometheus_url"],
        home=get_settings().home,
        rules_path=resources.alert_rules_file(),
    )


class AlertWaitTrigger(BaseTrigger):
    def __init__(
        self,
        model: str,
        source: dict[str, str],
        poll_interval: float,
        max_wait_s: float,
        registry: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.source = model, source
        self.poll_interval, self.max_wait_s = float(poll_interval), float(max_wait_s)
        self.registry = registry  # {"tracking_uri", "name"}: the champion is looked up here, warm

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "model": self.model,
            "source": self.source,
            "poll_interval": self.poll_interval,
            "max_wait_s": self.max_wait_s,
            "registry": self.registry,
        }

    def _champion(self) -> dict[str, Any]:
        """The serving @champion, looked up in the triggerer (mlflow stays imported there), so that the
        admission task that follows need not import mlflow: alert -> retraining run queued stays short."""
        if not self.registry:
            return {}
        from mlops.registry.aliases import CHAMPION, alias_version
        from mlops.registry.client import mlflow_client

        try:
            client = mlflow_client(self.registry["tracking_uri"])
            return {"champion": alias_version(client, self.registry["name"], CHAMPION)}
        except Exception as exc:  # noqa: BLE001 - admission looks it up again itself
            self.log.warning(
                "could not read @champion of %s (admission will): %s", self.registry["name"], exc
            )
            return {}

    async def run(self):
        from mlops.alerting import AlertSourceError, LedgerUnavailable, next_backoff, open_ledger
        from mlops.config.settings import get_settings

        s = get_settings()
        ledger = await asyncio.to_thread(open_ledger, s.home, s.alert_ledger_url)  # no I/O on the event loop
        source = await asyncio.to_thread(_source, self.source)
        deadline = time.monotonic() + self.max_wait_s
        next_poll, backoff, failing_since = 0.0, 0.0, None
        self.log.info("waiting for alerts on %s from the %s source", self.model, self.source["kind"])
        while True:
            now = time.monotonic()
            if now >= next_poll:
                try:
                    alerts = await asyncio.to_thread(source.firing)
                    mine = [a for a in alerts if a.model == self.model]
                    new = await asyncio.to_thread(ledger.record, mine)
                    if failing_since is not None:
                        self.log.info("alert source is back after %.0fs", now - failing_since)
                    if new:
                        self.log.info("%d new alert(s) on %s", new, self.model)
                    backoff, failing_since = 0.0, None
                    next_poll = now + self.poll_interval
                except (AlertSourceError, LedgerUnavailable) as exc:  # retried: the source re-sends
                    failing_since = now if failing_since is None else failing_since
                    backoff = next_backoff(backoff, self.poll_interval)
                    self.log.warning("%s — still waiting; next try in %.0fs", exc, backoff)
                    next_poll = now + backoff
            try:
                pending = await asyncio.to_thread(ledger.pending, self.model)
            except LedgerUnavailable as exc:
                self.log.warning("%s — still waiting", exc)
                pending = 0
            if pending:
                champion = await asyncio.to_thread(self._champion)
                yield TriggerEvent({"status": "alert", "pending": pending, **champion})
                return
            if now >= deadline:
                yield TriggerEvent({"status": "idle", "pending": 0})
                return
            await asyncio.sleep(1.0)


class AlertSensor(BaseSensorOperator):
    """Waits (deferred: no worker slot) until an alert on ``model`` is pending a retraining decision."""

    def __init__(
        self,
        *,
        model: str,
        poll_interval: float,
        max_wait_s: float = 3600.0,
        registered_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", max_wait_s + 600)
        super().__init__(**kwargs)
        self.model, self.poll_interval, self.max_wait_s = model, poll_interval, max_wait_s
        self.registered_model = registered_model

    def poke(self, context: Any) -> bool:
        from mlops.alerting import open_ledger
        from mlops.config.settings import get_settings

        s = get_settings()
        return open_ledger(s.home, s.alert_ledger_url).pending(self.model) > 0

    def execute(self, context: Any) -> Any:
        from mlops.config.settings import get_settings

        if self.poke(context):
            return {"status": "alert"}
        registry = None
        if self.registered_model:
            from mlops_airflow.hooks import MlflowHook

            registry = {"tracking_uri": MlflowHook().tracking_uri(), "name": self.registered_model}
        self.defer(
            trigger=AlertWaitTrigger(
                self.model, source_config(get_settings()), self.poll_interval, self.max_wait_s, registry
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.max_wait_s + 600),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        if not event or event.get("status") != "alert":
            raise AirflowSkipException(
                f"no alert on {self.model} for {self.max_wait_s:.0f}s; the next run waits again"
            )
        self.log.info("%d alert(s) on %s pending a decision", event["pending"], self.model)
        return event


class TriggerAdmittedRunOperator(TriggerDagRunOperator):
    """Starts the training run ``admit`` accepted (its fixed run id and conf); skipped when none was.

    One task instead of a short-circuit plus a trigger: every task start costs seconds of the
    alert -> retraining-run latency.
    """

    def __init__(self, *, admit_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", False)
        kwargs.setdefault("skip_when_already_exists", True)  # a retried admission hands out the same id
        super().__init__(**kwargs)
        self.admit_task_id = admit_task_id

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        admitted = context["ti"].xcom_pull(task_ids=self.admit_task_id)
        if not admitted:
            raise AirflowSkipException("no alert was admitted: nothing to start")
        self.trigger_run_id, self.conf = admitted["run_id"], admitted["conf"]
        return super().execute(context)
