"""The drift metrics a drift check publishes, and where they go.

The metric names are defined here once (``DRIFT_*`` constants); the alert rule
``ModelDriftDetected`` in ``mlops/alerting/rules/mlops.rules.yml`` and the Grafana dashboard use the
same names (a unit test keeps them equal).

* :func:`drift_samples` turns a drift check (a :func:`mlops.monitoring.check.check_drift` summary)
  into gauge :class:`Sample` values;
* :func:`push_samples` replaces a group of them on the Pushgateway;
* :func:`publish_drift` stores them where the local alert source reads them (always) and pushes them
  (when a Pushgateway is configured): what the monitoring DAG's ``publish_metrics`` task does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.alerting.local import LocalMetricStore

#: Pushgateway job of the drift metrics (a label of every sample; the drift rule matches on it).
DRIFT_JOB = "mlops_drift"
#: 1 while the last drift check of the model version found drift (labels: what an alert needs).
DRIFT_DETECTED = "mlops_drift_detected"
DRIFT_SHARE = "mlops_drift_share_ratio"
DRIFT_WINDOW_ROWS = "mlops_drift_window_rows"
DRIFT_CHECK_TIMESTAMP = "mlops_drift_check_timestamp_seconds"
DRIFT_FEATURE_DRIFTED = "mlops_drift_feature_drifted"
DRIFT_FEATURE_PSI = "mlops_drift_feature_psi"
DRIFT_FEATURE_P_VALUE = "mlops_drift_feature_p_value"


class PushgatewayError(RuntimeError):
    """The Pushgateway cannot be reached or refused the push; the message names its URL and why."""


@dataclass(frozen=True)
class Sample:
    """One gauge value with its labels (the shape both the Pushgateway and the local store take)."""

    name: str
    labels: dict[str, str]
    value: float
    help: str = ""


def drift_samples(summary: dict[str, Any], now: float | None = None) -> list[Sample]:
    """The metrics of one drift check (a :func:`mlops.monitoring.check.check_drift` summary).

    ``mlops_drift_detected`` is 1 while the last check of the version found drift; its labels carry
    what an alert needs (drifted features, report, DVC revision). Per feature: the drift flag, PSI and
    the test's p-value. Values are gauges: the next check replaces them.
    """
    base = {"model": str(summary["model"]), "model_version": str(summary["model_version"])}
    drifted = sorted(summary.get("drifted_features") or [])
    out = [
        Sample(
            DRIFT_DETECTED,
            {
                **base,
                "dvc_rev": str(summary.get("dvc_rev", "unknown"))[:12],
                "drifted_features": ",".join(drifted),
                "report": str(summary.get("report_url") or summary.get("report", "")),
            },  # fmt: skip
            1.0 if summary.get("status") == "drift" else 0.0,
            "1 while the last drift check of the model version found drift.",
        ),
        Sample(
            DRIFT_SHARE,
            base,
            float(summary.get("drifted_share") or 0.0),
            "Share of features that drifted (importance-weighted when known).",
        ),  # fmt: skip
        Sample(DRIFT_WINDOW_ROWS, base, float(summary.get("rows") or 0), "Rows in the checked window."),
        Sample(
            DRIFT_CHECK_TIMESTAMP,
            base,
            float(now if now is not None else time.time()),
            "When the last drift check ran (Unix time).",
        ),  # fmt: skip
    ]
    for f in summary.get("features") or []:
        labels = {**base, "feature": str(f["name"])}
        out.append(Sample(DRIFT_FEATURE_DRIFTED, labels, 1.0 if f.get("status") == "drift" else 0.0,
                          "1 when the feature drifted in the last check."))  # fmt: skip
        for key, name, text in (
            ("psi", DRIFT_FEATURE_PSI, "Population stability index of the feature."),
            ("p_value", DRIFT_FEATURE_P_VALUE, "p-value of the feature's KS / chi-square test."),
        ):
            value = f.get(key)
            if isinstance(value, int | float) and value == value:
                out.append(Sample(name, labels, float(value), text))
    return out


def push_samples(
    samples: list[Sample], gateway_url: str, grouping: dict[str, str], job: str = DRIFT_JOB
) -> None:
    """Replace the Pushgateway group ``job`` + ``grouping`` with ``samples`` (prometheus_client).

    Raises:
        PushgatewayError: the Pushgateway at ``gateway_url`` cannot be reached or refused the push.
    """
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for s in samples:
        if s.name not in gauges:
            gauges[s.name] = Gauge(s.name, s.help or s.name, sorted(s.labels), registry=registry)
        gauges[s.name].labels(**s.labels).set(s.value)
    try:
        push_to_gateway(gateway_url, job=job, registry=registry,
                        grouping_key=grouping, timeout=10)  # fmt: skip
    except OSError as exc:
        raise PushgatewayError(
            f"cannot push drift metrics to the Pushgateway at {gateway_url}: {exc}"
        ) from exc


def publish_drift(summary: dict[str, Any], pushgateway_url: str | None, store: LocalMetricStore) -> str:
    """Publish a drift check's metrics: always to the local store (what the local alert source reads),
    and to the Pushgateway when one is configured. Returns what was done, as a sentence."""
    samples = drift_samples(summary)
    grouping = {"model": str(summary["model"])}
    store.replace_group(DRIFT_JOB, grouping, samples)
    done = f"stored {len(samples)} samples in {store.path}"
    if pushgateway_url:
        push_samples(samples, pushgateway_url, grouping)
        done += f" and pushed them to {pushgateway_url}"
    return done
