"""Alert-driven retraining in Airflow: a deferrable sensor that waits, in the triggerer, for alerts.

:class:`AlertWaitTrigger` polls the configured alert source (Alertmanager, Prometheus or the local
rule evaluator) every ``poll_interval`` seconds, records every firing alert of its model in the
:class:`~mlops.alerting.AlertLedger` (once per firing), and checks the ledger every second: an alert
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
    from mlops import alerting, defaults
    from mlops.settings import get_settings

    return alerting.make_source(
        cfg["kind"],
        alertmanager_url=cfg["alertmanager_url"],
        prometheus_url=cfg["prometheus_url"],
        home=get_settings().home,
        rules_path=defaults.REPO_ROOT / "infra" / "monitoring" / "rules" / "mlops.rules.yml",
    )


class AlertWaitTrigger(BaseTrigger):
    def __init__(self, model: str, source: dict[str, str], poll_interval: float, max_wait_s: float) -> None:
        super().__init__()
        self.model, self.source = model, source
        self.poll_interval, self.max_wait_s = float(poll_interval), float(max_wait_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "model": self.model,
            "source": self.source,
            "poll_interval": self.poll_interval,
            "max_wait_s": self.max_wait_s,
        }

    async def run(self):
        from mlops import alerting
        from mlops.settings import get_settings

        ledger = await asyncio.to_thread(
            alerting.ledger, get_settings().home
        )  # no file I/O on the event loop
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
                except alerting.AlertSourceError as exc:
                    failing_since = now if failing_since is None else failing_since
                    backoff = alerting.next_backoff(backoff, self.poll_interval)
                    self.log.warning("%s — still waiting; next try in %.0fs", exc, backoff)
                    next_poll = now + backoff
            pending = await asyncio.to_thread(ledger.pending, self.model)
            if pending:
                yield TriggerEvent({"status": "alert", "pending": pending})
                return
            if now >= deadline:
                yield TriggerEvent({"status": "idle", "pending": 0})
                return
            await asyncio.sleep(1.0)


class AlertSensor(BaseSensorOperator):
    """Waits (deferred: no worker slot) until an alert on ``model`` is pending a retraining decision."""

    def __init__(
        self, *, model: str, poll_interval: float, max_wait_s: float = 3600.0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("timeout", max_wait_s + 600)
        super().__init__(**kwargs)
        self.model, self.poll_interval, self.max_wait_s = model, poll_interval, max_wait_s

    def poke(self, context: Any) -> bool:
        from mlops import alerting
        from mlops.settings import get_settings

        return alerting.ledger(get_settings().home).pending(self.model) > 0

    def execute(self, context: Any) -> Any:
        from mlops.settings import get_settings

        if self.poke(context):
            return {"status": "alert"}
        self.defer(
            trigger=AlertWaitTrigger(
                self.model, source_config(get_settings()), self.poll_interval, self.max_wait_s
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
