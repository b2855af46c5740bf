"""Where firing alerts come from: Alertmanager, Prometheus, or the local rule evaluation.

Every source has ``firing() -> list[Alert]``: :class:`AlertmanagerSource` (``/api/v2/alerts``: active,
neither silenced nor inhibited), :class:`PrometheusSource` (``/api/v1/alerts``: firing, not pending) and
:class:`~mlops.alerting.local.LocalAlertSource`; :func:`make_source` builds the configured one. A source
that cannot be reached raises :class:`AlertSourceError`; the caller keeps waiting, with
:func:`next_backoff` between tries. Requests go through the one Prometheus API client,
:class:`mlops.deploy.prometheus.PrometheusClient`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops.alerting.alerts import Alert, alert_from_api
from mlops.alerting.local import LocalAlertSource, local_store


class AlertSourceError(RuntimeError):
    """The alert source cannot be reached or answered nonsense; the message says which and why."""


class _HttpSource:
    kind = label = ""

    def __init__(self, url: str, timeout: float = 5.0):
        from mlops.deploy.prometheus import PrometheusClient

        self.url = url.rstrip("/")
        self.client = PrometheusClient(self.url, timeout=timeout, trust_env=False, name=self.label)

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        from mlops.deploy.prometheus import PrometheusError

        try:
            return self.client.get(path, params)
        except PrometheusError as exc:
            raise AlertSourceError(str(exc)) from exc


class AlertmanagerSource(_HttpSource):
    """Active, neither silenced nor inhibited alerts from Alertmanager's API v2."""

    kind, label = "alertmanager", "Alertmanager"

    def firing(self) -> list[Alert]:
        """The alerts Alertmanager reports active (not silenced, not inhibited)."""
        data = self._get("/api/v2/alerts", {"active": "true", "silenced": "false", "inhibited": "false"})
        return [
            alert_from_api(a, self.kind)
            for a in data
            if (a.get("status") or {}).get("state", "active") == "active"
        ]


class PrometheusSource(_HttpSource):
    """Firing (not pending) alerts from Prometheus' ``/api/v1/alerts``."""

    kind, label = "prometheus", "Prometheus"

    def firing(self) -> list[Alert]:
        """The alerts Prometheus reports firing (pending ones left out)."""
        data = self._get("/api/v1/alerts")
        try:
            alerts = data["data"]["alerts"]
        except (KeyError, TypeError) as exc:
            raise AlertSourceError(f"Prometheus at {self.url}: unexpected answer {str(data)[:200]}") from exc
        return [alert_from_api(a, self.kind) for a in alerts if a.get("state") == "firing"]


def make_source(
    kind: str, *, alertmanager_url: str, prometheus_url: str, home: Path, rules_path: Path
) -> AlertmanagerSource | PrometheusSource | LocalAlertSource:
    """The alert source named by configuration (``alertmanager``, ``prometheus`` or ``local``)."""
    if kind == "alertmanager":
        return AlertmanagerSource(alertmanager_url)
    if kind == "prometheus":
        return PrometheusSource(prometheus_url)
    if kind == "local":
        return LocalAlertSource(local_store(home), rules_path, home / "alerts" / "local-rules-state.json")
    raise ValueError(f"unknown alert source {kind!r}: use alertmanager, prometheus or local")


def next_backoff(current: float, base: float, cap: float = 60.0) -> float:
    """Exponential backoff for an unreachable source: base, 2x, 4x ... up to ``cap`` seconds."""
    return min(cap, max(base, current * 2))
