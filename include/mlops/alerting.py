"""Alerts that drive retraining: drift metrics, alert sources, and the alert ledger (storm protection).

* :func:`drift_samples` turns a drift check into the metrics Prometheus alerts on (pushed to the
  Pushgateway, or kept by the :class:`LocalMetricStore` of the embedded default).
* Alert sources return the alerts firing now, as :class:`Alert`: :class:`AlertmanagerSource`
  (``/api/v2/alerts``), :class:`PrometheusSource` (``/api/v1/alerts``) and :class:`LocalAlertSource`,
  which evaluates the same rule file as Prometheus (rules of the form ``metric{matchers} <op> number``,
  with their ``for`` duration) on the local metric store. A source that cannot be reached raises
  :class:`AlertSourceError`; the caller keeps waiting.
* :class:`AlertLedger` (SQLite) records every alert once (dedup by fingerprint + start time) and
  decides, atomically, which one starts a retrain: one retrain in flight per model, a cooldown after
  each, a daily budget. Every other alert is kept with the reason it was suppressed.

No Airflow here: the sensor, trigger and webhook receiver in ``plugins/mlops_airflow`` use this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

log = logging.getLogger(__name__)

DRIFT_ALERT = "ModelDriftDetected"
DRIFT_JOB = "mlops_drift"


class AlertSourceError(RuntimeError):
    """The alert source cannot be reached or answered nonsense; the message says which and why."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fingerprint(labels: dict[str, str]) -> str:
    """A stable identity of an alert's label set (what Alertmanager's fingerprint is for)."""
    text = "\x00".join(f"{k}\x01{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Sample:
    """One gauge value with its labels (the shape both the Pushgateway and the local store take)."""

    name: str
    labels: dict[str, str]
    value: float
    help: str = ""


def drift_samples(summary: dict[str, Any], now: float | None = None) -> list[Sample]:
    """The metrics of one drift check (a :func:`mlops.monitoring.check_drift` summary).

    ``mlops_drift_detected`` is 1 while the last check of the version found drift; its labels carry
    what an alert needs (drifted features, report, DVC revision). Per feature: the drift flag, PSI and
    the test's p-value. Values are gauges: the next check replaces them.
    """
    base = {"model": str(summary["model"]), "model_version": str(summary["model_version"])}
    drifted = sorted(summary.get("drifted_features") or [])
    out = [
        Sample(
            "mlops_drift_detected",
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
            "mlops_drift_share_ratio",
            base,
            float(summary.get("drifted_share") or 0.0),
            "Share of features that drifted (importance-weighted when known).",
        ),  # fmt: skip
        Sample(
            "mlops_drift_window_rows", base, float(summary.get("rows") or 0), "Rows in the checked window."
        ),
        Sample(
            "mlops_drift_check_timestamp_seconds",
            base,
            float(now if now is not None else time.time()),
            "When the last drift check ran (Unix time).",
        ),  # fmt: skip
    ]
    for f in summary.get("features") or []:
        labels = {**base, "feature": str(f["name"])}
        out.append(Sample("mlops_drift_feature_drifted", labels, 1.0 if f.get("status") == "drift" else 0.0,
                          "1 when the feature drifted in the last check."))  # fmt: skip
        for key, name, text in (
            ("psi", "mlops_drift_feature_psi", "Population stability index of the feature."),
            ("p_value", "mlops_drift_feature_p_value", "p-value of the feature's KS / chi-square test."),
        ):
            value = f.get(key)
            if isinstance(value, int | float) and value == value:
                out.append(Sample(name, labels, float(value), text))
    return out


def push_samples(
    samples: list[Sample], gateway_url: str, grouping: dict[str, str], job: str = DRIFT_JOB
) -> None:
    """Replace the Pushgateway group ``job`` + ``grouping`` with ``samples`` (prometheus_client)."""
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
        raise AlertSourceError(
            f"cannot push drift metrics to the Pushgateway at {gateway_url}: {exc}"
        ) from exc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class LocalMetricStore:
    """A Pushgateway stand-in for the embedded default: groups of samples in one JSON file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def replace_group(self, job: str, grouping: dict[str, str], samples: list[Sample]) -> None:
        key = json.dumps({"job": job, **grouping}, sort_keys=True)
        with _locked(self.path):
            data = self._read()
            data[key] = [{**asdict(s), "labels": {**s.labels, "job": job, **grouping}} for s in samples]
            _write_json(self.path, data)

    def samples(self) -> list[Sample]:
        return [Sample(**s) for group in self._read().values() for s in group]


def publish_drift(summary: dict[str, Any], pushgateway_url: str | None, store: LocalMetricStore) -> str:
    """Publish a drift check's metrics: always to the local store (what the local alert source reads),
    and to the Pushgateway when one is configured."""
    samples = drift_samples(summary)
    grouping = {"model": str(summary["model"])}
    store.replace_group(DRIFT_JOB, grouping, samples)
    done = f"stored {len(samples)} samples in {store.path}"
    if pushgateway_url:
        push_samples(samples, pushgateway_url, grouping)
        done += f" and pushed them to {pushgateway_url}"
    return done


# --------------------------------------------------------------------------- alerts and sources


@dataclass(frozen=True)
class Alert:
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
        return self.labels.get("model")

    def as_dict(self) -> dict[str, Any]:
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


def _alert_from_api(a: dict[str, Any], source: str) -> Alert:
    labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
    starts = a.get("startsAt") or a.get("activeAt") or ""
    if starts:
        starts = _iso(_parse_ts(starts))
    return Alert(
        name=labels.get("alertname", ""),
        labels=labels,
        annotations={str(k): str(v) for k, v in (a.get("annotations") or {}).items()},
        fingerprint=str(a.get("fingerprint") or fingerprint(labels)),
        starts_at=starts,
        source=source,
        generator_url=str(a.get("generatorURL") or ""),
    )


class _HttpSource:
    kind = label = ""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            r = httpx.get(f"{self.url}{path}", params=params, timeout=self.timeout, trust_env=False)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AlertSourceError(f"{self.label} at {self.url}: {type(exc).__name__}: {exc}") from exc


class AlertmanagerSource(_HttpSource):
    """Active, neither silenced nor inhibited alerts from Alertmanager's API v2."""

    kind, label = "alertmanager", "Alertmanager"

    def firing(self) -> list[Alert]:
        data = self._get("/api/v2/alerts", {"active": "true", "silenced": "false", "inhibited": "false"})
        return [
            _alert_from_api(a, self.kind)
            for a in data
            if (a.get("status") or {}).get("state", "active") == "active"
        ]


class PrometheusSource(_HttpSource):
    """Firing (not pending) alerts from Prometheus' ``/api/v1/alerts``."""

    kind, label = "prometheus", "Prometheus"

    def firing(self) -> list[Alert]:
        data = self._get("/api/v1/alerts")
        try:
            alerts = data["data"]["alerts"]
        except (KeyError, TypeError) as exc:
            raise AlertSourceError(f"Prometheus at {self.url}: unexpected answer {str(data)[:200]}") from exc
        return [_alert_from_api(a, self.kind) for a in alerts if a.get("state") == "firing"]


_SIMPLE = re.compile(
    r"^\s*(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<matchers>[^}]*)\})?\s*"
    r"(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str | None) -> float:
    """Seconds of a Prometheus duration such as ``1m30s`` (empty: 0)."""
    if not text:
        return 0.0
    parts = _DURATION.findall(str(text))
    if "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return float(sum(int(n) * _UNIT_S[u] for n, u in parts))


@dataclass(frozen=True)
class Rule:
    """An alerting rule of a Prometheus rule file; ``simple`` when the local source can evaluate it."""

    name: str
    expr: str
    for_s: float
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def simple(self) -> bool:
        return _SIMPLE.match(self.expr) is not None

    def matches(self, sample: Sample) -> bool:
        m = _SIMPLE.match(self.expr)
        if m is None or sample.name != m["metric"]:
            return False
        for label, op, value in _MATCHER.findall(m["matchers"] or ""):
            actual = sample.labels.get(label, "")
            value = value.encode().decode("unicode_escape")
            ok = {"=": actual == value, "!=": actual != value,
                  "=~": re.fullmatch(value, actual) is not None, "!~": re.fullmatch(value, actual) is None}[op]  # fmt: skip
            if not ok:
                return False
        return _OPS[m["op"]](sample.value, float(m["value"]))


def load_rules(path: Path) -> list[Rule]:
    """The alerting rules of a Prometheus rule file (recording rules are ignored)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the rule file {path}: {exc}") from exc
    rules = []
    for group in doc.get("groups") or []:
        for r in group.get("rules") or []:
            if "alert" in r:
                rules.append(Rule(r["alert"], str(r["expr"]).strip(), parse_duration(r.get("for")),
                                  {k: str(v) for k, v in (r.get("labels") or {}).items()},
                                  {k: str(v) for k, v in (r.get("annotations") or {}).items()}))  # fmt: skip
    return rules


def _render(template: str, labels: dict[str, str], value: float) -> str:
    """Prometheus' ``{{ $labels.x }}`` and ``{{ $value }}`` in annotations (nothing more)."""
    text = re.sub(
        r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: labels.get(m[1], ""), template
    )
    return re.sub(r"\{\{\s*\$value\s*\}\}", f"{value:g}", text)


class LocalAlertSource:
    """The embedded default's alert evaluation: the Prometheus rule file applied to the local store.

    Same semantics as Prometheus for the rules it can evaluate (``metric{matchers} <op> number``): an
    alert is pending while the condition holds and fires once it held for the rule's ``for``
    duration; when the condition stops holding the alert resolves (its next firing is a new one).
    Rules needing PromQL functions (rates, quantiles) are listed in :attr:`unsupported` and skipped.
    """

    kind = "local"

    def __init__(self, store: LocalMetricStore, rules_path: Path, state_path: Path):
        self.store, self.state_path = store, Path(state_path)
        rules = load_rules(rules_path)
        self.rules = [r for r in rules if r.simple]
        self.unsupported = [r.name for r in rules if not r.simple]

    def firing(self, now: float | None = None) -> list[Alert]:
        now = time.time() if now is None else now
        with _locked(self.state_path):
            try:
                pending: dict[str, float] = json.loads(self.state_path.read_text())
            except (FileNotFoundError, ValueError):
                pending = {}
            active: dict[str, float] = {}
            out = []
            for rule in self.rules:
                for s in self.store.samples():
                    if not rule.matches(s):
                        continue
                    labels = {**s.labels, **rule.labels, "alertname": rule.name}
                    fp = fingerprint(labels)
                    since = active[fp] = pending.get(fp, now)
                    if now - since >= rule.for_s:
                        out.append(Alert(
                            rule.name, labels,
                            {k: _render(v, labels, s.value) for k, v in rule.annotations.items()},
                            fp, _iso(since + rule.for_s), self.kind,
                        ))  # fmt: skip
            _write_json(self.state_path, active)
        return out


def make_source(kind: str, *, alertmanager_url: str, prometheus_url: str, home: Path, rules_path: Path):
    """The alert source named by configuration (``alertmanager``, ``prometheus`` or ``local``)."""
    if kind == "alertmanager":
        return AlertmanagerSource(alertmanager_url)
    if kind == "prometheus":
        return PrometheusSource(prometheus_url)
    if kind == "local":
        return LocalAlertSource(local_store(home), rules_path, home / "alerts" / "local-rules-state.json")
    raise ValueError(f"unknown alert source {kind!r}: use alertmanager, prometheus or local")


def local_store(home: Path) -> LocalMetricStore:
    return LocalMetricStore(Path(home) / "alerts" / "metrics.json")


# --------------------------------------------------------------------------- webhook payloads


def alerts_from_webhook(payload: dict[str, Any]) -> list[Alert]:
    """The firing alerts of an Alertmanager webhook payload (version 4); resolved ones are dropped.

    Raises ValueError naming what is wrong when the payload is not Alertmanager's format.
    """
    if not isinstance(payload, dict) or str(payload.get("version")) != "4":
        raise ValueError("not an Alertmanager webhook payload: 'version' must be \"4\"")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("'alerts' must be a list")
    out = []
    for i, a in enumerate(alerts):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict) or "alertname" not in a["labels"]:
            raise ValueError(f"alerts[{i}] must have labels with an alertname")
        if a.get("status") not in ("firing", "resolved"):
            raise ValueError(f"alerts[{i}].status must be firing or resolved")
        try:
            alert = _alert_from_api(a, "webhook")
        except ValueError as exc:
            raise ValueError(f"alerts[{i}].startsAt is not a timestamp: {exc}") from exc
        if a["status"] == "firing":
            out.append(alert)
    return out


# --------------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class Decision:
    accepted: dict[str, Any] | None  # the alert that starts a retrain (Alert.as_dict() + run_id), if any
    suppressed: list[tuple[str, str]]  # (alert key, reason)


def retrain_run_id(alert: dict[str, Any]) -> str:
    """The training run an accepted alert starts: the same id on every retry, so it starts at most once."""
    stamp = re.sub(r"[^0-9T]", "", alert["starts_at"])[:15]
    return f"retrain__{alert['name']}__{alert['fingerprint']}__{stamp}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL, source TEXT NOT NULL, alert TEXT NOT NULL,
    received_at REAL NOT NULL, seen INTEGER NOT NULL DEFAULT 1,
    decision TEXT, reason TEXT, decided_at REAL, run_id TEXT, launched_at REAL
);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts (model, decision);
"""


class AlertLedger:
    """Every alert that reached the platform, once, with what was done about it (SQLite, WAL).

    ``decision`` is NULL while pending, then ``retrain`` or ``suppressed`` (with ``reason``).
    Safe for the sensor and the webhook receiver writing at the same time (one transaction each).
    An accepted alert stays *unlaunched* until its training run is seen to exist
    (:meth:`mark_launched`): a retried admission hands the same alert and run id out again instead
    of losing it.
    """

    stale_after_s = 24 * 3600.0  # a pending alert older than this starts nothing (e.g. after an outage)
    relaunch_within_s = 3600.0  # an accepted alert whose run never appeared is given up after this

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(alerts)")}
            if "launched_at" not in columns:  # a ledger written before launches were tracked
                db.execute("ALTER TABLE alerts ADD COLUMN launched_at REAL")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    def record(self, alerts: list[Alert], now: float | None = None) -> int:
        """Record alerts; a key seen before only counts as seen again. Returns how many were new."""
        now = time.time() if now is None else now
        new = 0
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            for a in alerts:
                if not a.model:
                    log.warning("alert %s has no model label: ignored", a.name)
                    continue
                cur = db.execute(
                    "INSERT OR IGNORE INTO alerts (key, model, name, fingerprint, starts_at, source, alert, received_at)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (
                        a.key,
                        a.model,
                        a.name,
                        a.fingerprint,
                        a.starts_at,
                        a.source,
                        json.dumps(a.as_dict()),
                        now,
                    ),
                )
                if cur.rowcount:
                    new += 1
                else:
                    db.execute("UPDATE alerts SET seen = seen + 1 WHERE key = ?", (a.key,))
            db.execute("COMMIT")
        return new

    def pending(self, model: str) -> int:
        with self._db() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM alerts WHERE model = ? AND decision IS NULL", (model,)
            ).fetchone()
        return int(n)

    def blocker(
        self, model: str, *, cooldown_s: float, daily_budget: int, now: float | None = None
    ) -> str | None:
        """Why no retrain may start now (cooldown, daily budget), or None."""
        with self._db() as db:
            return self._blocker(db, model, cooldown_s, daily_budget, time.time() if now is None else now)

    @staticmethod
    def _blocker(
        db: sqlite3.Connection, model: str, cooldown_s: float, daily_budget: int, now: float
    ) -> str | None:
        day_start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        last, today = db.execute(
            "SELECT MAX(decided_at), SUM(decided_at >= ?) FROM alerts WHERE model = ? AND decision = 'retrain'",
            (day_start.timestamp(), model),
        ).fetchone()
        if last is not None and now - last < cooldown_s:
            return (
                f"cooldown: last retrain started {_iso(last)}, next allowed after {_iso(last + cooldown_s)}"
            )
        if (today or 0) >= daily_budget:
            return f"daily budget used: {today} of {daily_budget} retrains started today (UTC)"
        return None

    def unlaunched(self, model: str) -> list[dict[str, Any]]:
        """Accepted alerts whose training run has not been seen yet (key, run_id, decided_at)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT key, run_id, decided_at FROM alerts WHERE model = ? AND decision = 'retrain' "
                "AND launched_at IS NULL",
                (model,),
            ).fetchall()
        return [dict(r) for r in rows]

    def mark_launched(self, key: str, now: float | None = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE alerts SET launched_at = ? WHERE key = ?", (time.time() if now is None else now, key)
            )

    def decide(
        self,
        model: str,
        *,
        alert_names: list[str],
        champion: str | None,
        in_flight: list[str],
        cooldown_s: float,
        daily_budget: int,
        now: float | None = None,
    ) -> Decision:
        """Decide every pending alert of ``model`` in one transaction: at most one starts a retrain.

        An accepted alert not launched yet (a retried admission) is handed out again first. Then, per
        pending alert, newest first: an alert not in ``alert_names``, not about the ``champion``
        version, or older than :attr:`stale_after_s` is suppressed; if a training run is in flight
        (``in_flight``), the last retrain started less than ``cooldown_s`` ago, or ``daily_budget``
        retrains already started this UTC day, all are suppressed with that reason; otherwise the
        newest starts a retrain (with a fixed run id) and the others are coalesced into it.
        """
        now = time.time() if now is None else now
        accepted: dict[str, Any] | None = None
        suppressed: list[tuple[str, str]] = []

        def suppress(key: str, reason: str) -> None:
            suppressed.append((key, reason))
            db.execute(
                "UPDATE alerts SET decision='suppressed', reason=?, decided_at=? WHERE key=?",
                (reason, now, key),
            )

        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            for row in db.execute(
                "SELECT key, alert, run_id, decided_at FROM alerts WHERE model = ? AND decision = 'retrain' "
                "AND launched_at IS NULL ORDER BY decided_at DESC",
                (model,),
            ).fetchall():
                if accepted is None and now - row["decided_at"] < self.relaunch_within_s:
                    accepted = {**json.loads(row["alert"]), "run_id": row["run_id"]}
                else:
                    suppress(row["key"], f"its training run {row['run_id']} was never created")
            if accepted is not None:
                db.execute("COMMIT")
                return Decision(accepted, suppressed)
            rows = db.execute(
                "SELECT key, alert, received_at FROM alerts WHERE model = ? AND decision IS NULL "
                "ORDER BY received_at DESC, key",
                (model,),
            ).fetchall()
            blocker = (
                f"a training run is in flight ({', '.join(in_flight)})"
                if in_flight
                else self._blocker(db, model, cooldown_s, daily_budget, now)
            )
            for row in rows:
                alert = json.loads(row["alert"])
                version = alert["labels"].get("model_version")
                if alert["name"] not in alert_names:
                    suppress(
                        row["key"], f"alert {alert['name']} does not start retraining (retraining.alerts)"
                    )
                elif champion is not None and version not in (None, "", str(champion)):
                    suppress(row["key"], f"about v{version}, not the serving @champion v{champion}")
                elif now - row["received_at"] > self.stale_after_s:
                    suppress(row["key"], f"stale: received {_iso(row['received_at'])}, over 24 h ago")
                elif blocker:
                    suppress(row["key"], blocker)
                elif accepted is None:
                    accepted = {**alert, "run_id": retrain_run_id(alert)}
                    db.execute(
                        "UPDATE alerts SET decision='retrain', reason=?, decided_at=?, run_id=? WHERE key=?",
                        ("starts a retrain", now, accepted["run_id"], row["key"]),
                    )
                else:
                    suppress(
                        row["key"], f"coalesced into the retrain started for alert {accepted['fingerprint']}"
                    )
            db.execute("COMMIT")
        return Decision(accepted, suppressed)

    def entries(self, model: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Newest first: what the UI shows."""
        sql = "SELECT key, model, name, fingerprint, starts_at, source, received_at, seen, decision, reason, decided_at, run_id, alert FROM alerts"
        args: tuple = ()
        if model:
            sql, args = sql + " WHERE model = ?", (model,)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY received_at DESC, key LIMIT ?", (*args, limit)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["alert"] = json.loads(d["alert"])
            d["received"] = _iso(d["received_at"])
            d["decided"] = _iso(d["decided_at"]) if d["decided_at"] else ""
            out.append(d)
        return out


def ledger(home: Path) -> AlertLedger:
    return AlertLedger(Path(home) / "alerts" / "ledger.db")


def next_backoff(current: float, base: float, cap: float = 60.0) -> float:
    """Exponential backoff for an unreachable source: base, 2x, 4x ... up to ``cap`` seconds."""
    return min(cap, max(base, current * 2))
