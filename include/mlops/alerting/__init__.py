"""Alerts that drive retraining: sources, local rule evaluation, the alert ledger, webhook parsing.

Modules: :mod:`~mlops.alerting.alerts` (the :class:`Alert` type), :mod:`~mlops.alerting.sources`
(Alertmanager, Prometheus, :func:`make_source`), :mod:`~mlops.alerting.local` (rule file, local metric
store and evaluation), :mod:`~mlops.alerting.ledger` (storm protection), :mod:`~mlops.alerting.webhook`
(Alertmanager's payload). The drift metrics the rules alert on are in :mod:`mlops.monitoring.metrics`;
the rule files are package data in ``mlops/alerting/rules/``.

Re-exported here: what the DAGs and the Airflow plugins use. No Airflow in this package, and nothing
heavy at import (httpx and yaml are imported when used).
"""

from __future__ import annotations

from mlops.alerting.alerts import Alert
from mlops.alerting.ledger import LedgerUnavailable, open_ledger
from mlops.alerting.local import local_store
from mlops.alerting.sources import AlertSourceError, make_source, next_backoff
from mlops.alerting.webhook import alerts_from_webhook

__all__ = [
    "Alert",
    "AlertSourceError",
    "LedgerUnavailable",
    "alerts_from_webhook",
    "local_store",
    "make_source",
    "next_backoff",
    "open_ledger",
]
