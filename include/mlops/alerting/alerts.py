"""An alert as the platform sees it, whichever source reported it.

:class:`Alert` (with its identity :attr:`Alert.key` and what a retraining run's conf carries),
:func:`fingerprint` of a label set, and :func:`alert_from_api`, which reads the alert objects of
Alertmanager's and Prometheus' APIs and of Alertmanager's webhook.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

#: The alert of the rules file that drift checks raise (``mlops/alerting/rules/mlops.rules.yml``).
DRIFT_ALERT = "ModelDriftDetected"


def utc_iso(ts: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second (``2026-11-26T10:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fingerprint(labels: dict[str, str]) -> str:
    """A stable identity of an alert's label set (what Alertmanager's fingerprint is for)."""
    text = "\x00".join(f"{k}\x01{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One firing of an alert rule, as reported by ``source``."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: str  # ISO 8601, UTC
    source: str
    generator_url: str = ""

    @property
    def key(self) -> str:
        """Identity of this firing: the same alert re-sent is a duplicate; a new firing is not."""
        return f"{self.fingerprint}@{self.starts_at}"

    @property
    def model(self) -> str | None:
        """The ``model`` label: which model config the alert is about (None when unlabelled)."""
        return self.labels.get("model")

    def as_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready data, with its ledger ``key``."""
        return {**asdict(self), "key": self.key}

    def for_conf(self) -> dict[str, Any]:
        """What a retraining run's conf carries: name, fingerprint, version, drifted features, report."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
            "source": self.source,
            "model_version": self.labels.get("model_version", ""),
            "dvc_rev": self.labels.get("dvc_rev", ""),
            "drifted_features": [f for f in self.labels.get("drifted_features", "").split(",") if f],
            "report": self.labels.get("report", "") or self.annotations.get("report", ""),
            "summary": self.annotations.get("summary", ""),
        }


def alert_from_api(a: dict[str, Any], source: str) -> Alert:
    """An alert object of Alertmanager's or Prometheus' API (or of a webhook payload) as an :class:`Alert`.

    Raises:
        ValueError: its ``startsAt`` / ``activeAt`` is not an ISO 8601 timestamp.
    """
    labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
    starts = a.get("startsAt") or a.get("activeAt") or ""
    if starts:
        starts = utc_iso(_parse_ts(starts))
    return Alert(
        name=labels.get("alertname", ""),
        labels=labels,
        annotations={str(k): str(v) for k, v in (a.get("annotations") or {}).items()},
        fingerprint=str(a.get("fingerprint") or fingerprint(labels)),
        starts_at=starts,
        source=source,
        generator_url=str(a.get("generatorURL") or ""),
    )
