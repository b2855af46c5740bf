"""The alert ledger: every alert that reached the platform, once, and what was done about it.

:class:`AlertLedger` (SQLite, WAL) records each firing once (dedup by fingerprint + start time) and
decides, atomically, which one starts a retrain: one retrain in flight per model, a cooldown after each,
a daily budget (storm protection). Every other alert is kept with the reason it was suppressed. An
accepted alert gets a fixed training run id (:func:`retrain_run_id`), so a retried admission starts it
at most once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.alerting.alerts import Alert, utc_iso

log = logging.getLogger(__name__)


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be written now (disk full, read-only, unreachable): nothing was recorded.

    SQLite rolls the transaction back, so the ledger holds exactly what it held before; the sender
    (Alertmanager, the sensor's poll) tries again later.
    """


@dataclass(frozen=True)
class Decision:
    """What the ledger decided for a batch of alerts: at most one retrain, the rest suppressed with reasons."""

    accepted: dict[str, Any] | None  # the alert that starts a retrain (Alert.as_dict() + run_id), if any
    suppressed: list[tuple[str, str]]  # (alert key, reason)


def retrain_run_id(alert: dict[str, Any]) -> str:
    """The training run an accepted alert starts: the same id on every retry, so it starts at most once.

    Nothing of the alert goes in verbatim: the alert name is reduced to the characters Airflow allows in
    a run id and the firing is named by a hash of its ledger key, so whatever a webhook sent, the id is
    valid (an invalid one would fail the trigger and hold the model's admissions until it expires).
    """
    stamp = re.sub(r"[^0-9T]", "", alert["starts_at"])[:15]
    name = re.sub(r"[^A-Za-z0-9_-]", "-", str(alert["name"]))[:64] or "alert"
    key = hashlib.sha256(f"{alert['fingerprint']}@{alert['starts_at']}".encode()).hexdigest()[:16]
    return f"retrain__{name}__{key}__{stamp}"


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
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise LedgerUnavailable(f"alert ledger {self.path} cannot be opened: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.row_factory = sqlite3.Row
            yield db
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):  # contention beyond the 30 s timeout: a bug to see, not an outage
                raise
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")  # explicit: the ledger keeps exactly what it held before
            raise LedgerUnavailable(
                f"alert ledger {self.path} cannot be used now ({exc}; disk full?): no change was made to it"
            ) from exc
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
        """How many alerts on ``model`` wait for a decision."""
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
                f"cooldown: last retrain started {utc_iso(last)}, "
                f"next allowed after {utc_iso(last + cooldown_s)}"
            )
        if (today or 0) >= daily_budget:
            return f"daily budget used: {today} of {daily_budget} retrains started today (UTC)"
        return None

    def retrains_today(self, model: str, now: float | None = None) -> int:
        """Alert-driven retrains of ``model`` started this UTC day (what the daily budget counts)."""
        now = time.time() if now is None else now
        day_start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        with self._db() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM alerts WHERE model = ? AND decision = 'retrain' AND decided_at >= ?",
                (model, day_start.timestamp()),
            ).fetchone()
        return int(n)

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
        """Record that the retraining run of alert ``key`` was created (its launch time)."""
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
                    suppress(row["key"], f"stale: received {utc_iso(row['received_at'])}, over 24 h ago")
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
            d["received"] = utc_iso(d["received_at"])
            d["decided"] = utc_iso(d["decided_at"]) if d["decided_at"] else ""
            out.append(d)
        return out


def open_ledger(home: Path) -> AlertLedger:
    """The alert ledger of the platform home ``home`` (``alerts/ledger.db``), created if missing."""
    return AlertLedger(Path(home) / "alerts" / "ledger.db")
