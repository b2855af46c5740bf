"""Alertmanager's webhook payload (version 4) read as alerts: what the webhook receiver records."""

from __future__ import annotations

import re
from typing import Any

from mlops.alerting.alerts import Alert, alert_from_api

#: Alertmanager's fingerprints are 16 hex digits; anything else a sender invents stays short and plain
#: (no spaces, slashes or quotes: it is shown in pages and logs; run ids use only its hash).
_FINGERPRINT = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_LABELS = 64
MAX_VALUE_CHARS = 8192
MAX_ALERTS = 1000


def _check_fields(i: int, a: dict[str, Any]) -> None:
    """Every field that leaves the webhook for the ledger, a run id or a run's conf is bounded and plain."""
    fp = a.get("fingerprint")
    if fp is not None and not (isinstance(fp, str) and _FINGERPRINT.match(fp)):
        raise ValueError(
            f"alerts[{i}].fingerprint must be 1-128 letters, digits or _ . : -, got {str(fp)[:80]!r}"
        )
    for field in ("labels", "annotations"):
        values = a.get(field) or {}
        if not isinstance(values, dict):
            raise ValueError(f"alerts[{i}].{field} must be an object")
        if len(values) > MAX_LABELS:
            raise ValueError(f"alerts[{i}].{field} has {len(values)} entries (at most {MAX_LABELS})")
        for k, v in values.items():
            if not isinstance(v, str) or len(k) > 256 or len(v) > MAX_VALUE_CHARS:
                raise ValueError(
                    f"alerts[{i}].{field}[{str(k)[:80]!r}] must be a string of at most {MAX_VALUE_CHARS} characters"
                )
            if any(ord(c) < 32 and c not in "\t\n" for c in k + v):
                raise ValueError(f"alerts[{i}].{field}[{str(k)[:80]!r}] contains control characters")


def alerts_from_webhook(payload: dict[str, Any]) -> list[Alert]:
    """The firing alerts of an Alertmanager webhook payload (version 4); resolved ones are dropped.

    Raises ValueError naming what is wrong when the payload is not Alertmanager's format or a field is
    out of bounds (fingerprint, label and annotation sizes: they reach the ledger, run ids and run confs).
    """
    if not isinstance(payload, dict) or str(payload.get("version")) != "4":
        raise ValueError("not an Alertmanager webhook payload: 'version' must be \"4\"")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("'alerts' must be a list")
    if len(alerts) > MAX_ALERTS:
        raise ValueError(f"'alerts' has {len(alerts)} entries (at most {MAX_ALERTS} per delivery)")
    out = []
    for i, a in enumerate(alerts):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict) or "alertname" not in a["labels"]:
            raise ValueError(f"alerts[{i}] must have labels with an alertname")
        _check_fields(i, a)
        if a.get("status") not in ("firing", "resolved"):
            raise ValueError(f"alerts[{i}].status must be firing or resolved")
        try:
            alert = alert_from_api(a, "webhook")
        except ValueError as exc:
            raise ValueError(f"alerts[{i}].startsAt is not a timestamp: {exc}") from exc
        if a["status"] == "firing":
            out.append(alert)
    return out
