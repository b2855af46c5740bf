"""The alert ledger: every alert that reached the platform, once, and what was done about it.

:class:`AlertLedger` records each firing once (dedup by fingerprint + start time) and decides,
atomically, which one starts a retrain: one retrain in flight per model, a cooldown after each, a daily
budget (storm protection). Every other alert is kept with the reason it was suppressed. An accepted
alert gets a fixed training run id (:func:`retrain_run_id`), so a retried admission starts it at most
once.

The ledger is a SQL database reached through SQLAlchemy, chosen by URL (``alert_ledger_url``): a SQLite
file under the state folder by default (WAL; every transaction ``BEGIN IMMEDIATE``, so writers queue),
PostgreSQL in the container stack and on Kubernetes (every transaction first takes one
transaction-scoped advisory lock, so admissions from any number of processes are serialized).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from mlops.alerting.alerts import Alert, utc_iso

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be written now (disk full, read-only, unreachable): nothing was recorded.

    The transaction is rolled back, so the ledger holds exactly what it held before; the sender
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


_META = MetaData()
_ALERTS = Table(
    "alerts",
    _META,
    Column("key", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("starts_at", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("alert", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("seen", Integer, nullable=False, server_default="1"),
    Column("decision", Text),
    Column("reason", Text),
    Column("decided_at", Float),
    Column("run_id", Text),
    Column("launched_at", Float),
    Index("alerts_pending", "model", "decision"),
)
#: PostgreSQL advisory lock every ledger transaction takes first (an arbitrary constant: "mlops").
_PG_LOCK = 0x6D6C6F7073

_ENGINES: dict[tuple[str, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()
#: Server databases whose schema this process has ensured already (one check per process, not per use).
_READY: set[tuple[str, Engine]] = set()


def ledger_url(home: Path, url: str | None = None) -> str:
    """The ledger's database URL: ``url`` when set, else the SQLite file ``<home>/alerts/ledger.db``."""
    return url or f"sqlite:///{Path(home) / 'alerts' / 'ledger.db'}"


def _engine(url: str) -> Engine:
    """One engine per URL and process (its pool is shared by every ledger object; never across a fork)."""
    with _ENGINES_LOCK:
        key = (url, os.getpid())
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _make_engine(url)
        return engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        from sqlalchemy.pool import NullPool

        # A file opened per use (no pooled handle survives a fork or a deleted folder); the driver's own
        # transaction handling is off so that every transaction can be BEGIN IMMEDIATE (writers queue
        # for 30 s instead of failing on a read-to-write upgrade).
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A server database: a small pool, connections checked before use (a restarted server is not an error).
    return create_engine(url, pool_size=2, max_overflow=4, pool_pre_ping=True, pool_recycle=1800)


class AlertLedger:
    """Every alert that reached the platform, once, with what was done about it (SQL, by URL).

    ``decision`` is NULL while pending, then ``retrain`` or ``suppressed`` (with ``reason``).
    Safe for the sensor and the webhook receiver writing at the same time, from any number of
    processes (one serialized transaction each). An accepted alert stays *unlaunched* until its
    training run is seen to exist (:meth:`mark_launched`): a retried admission hands the same alert and
    run id out again instead of losing it.
    """

    stale_after_s = 24 * 3600.0  # a pending alert older than this starts nothing (e.g. after an outage)
    relaunch_within_s = 3600.0  # an accepted alert whose run never appeared is given up after this

    def __init__(self, where: str | Path):
        """``where``: a SQLAlchemy URL, or the path of a SQLite file."""
        url = str(where) if "://" in str(where) else f"sqlite:///{where}"
        self.url = url
        self.where = _redacted(url)
        #: The SQLite file, when the ledger is one (None on a database server).
        self.path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = _engine(url)
        if (url, self.engine) in _READY:
            return
        with self._db() as db:
            _META.create_all(db, checkfirst=True)
            columns = {c["name"] for c in inspect(db).get_columns("alerts")}
            if "launched_at" not in columns:  # a ledger written before launches were tracked
                db.execute(text("ALTER TABLE alerts ADD COLUMN launched_at REAL"))
        if (
            self.path is None
        ):  # a SQLite file can be deleted under us (tests, `make clean`): checked each time
            _READY.add((url, self.engine))

    @contextlib.contextmanager
    def _db(self) -> Iterator[Connection]:
        """One transaction, serialized with every other one; committed when the block ends."""
        try:
            with self.engine.begin() as db:
                if db.dialect.name == "postgresql":
                    db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
                yield db
        except OperationalError as exc:
            if "database is locked" in str(exc):  # contention beyond the 30 s timeout: a bug to see
                raise
            raise LedgerUnavailable(
                f"alert ledger {self.where} cannot be used now ({exc.orig}; disk full? server down?): "
                "no change was made to it"
            ) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:  # the server went away mid-transaction
                raise LedgerUnavailable(f"alert ledger {self.where}: connection lost ({exc.orig})") from exc
            raise

    def record(self, alerts: list[Alert], now: float | None = None) -> int:
        """Record alerts; a key seen before only counts as seen again. Returns how many were new."""
        now = time.time() if now is None else now
        new = 0
        with self._db() as db:
            for a in alerts:
                if not a.model:
                    log.warning("alert %s has no model label: ignored", a.name)
                    continue
                cur = db.execute(
                    text(
                        "INSERT INTO alerts (key, model, name, fingerprint, starts_at, source, alert, received_at)"
                        " VALUES (:key, :model, :name, :fp, :starts_at, :source, :alert, :now)"
                        " ON CONFLICT (key) DO NOTHING"
                    ),
                    {
                        "key": a.key,
                        "model": a.model,
                        "name": a.name,
                        "fp": a.fingerprint,
                        "starts_at": a.starts_at,
                        "source": a.source,
                        "alert": json.dumps(a.as_dict()),
                        "now": now,
                    },
                )
                if cur.rowcount:
                    new += 1
                else:
                    db.execute(text("UPDATE alerts SET seen = seen + 1 WHERE key = :key"), {"key": a.key})
        return new

    def pending(self, model: str) -> int:
        """How many alerts on ``model`` wait for a decision."""
        with self._db() as db:
            n = db.execute(
                text("SELECT COUNT(*) FROM alerts WHERE model = :model AND decision IS NULL"),
                {"model": model},
            ).scalar_one()
        return int(n)

    def blocker(
        self, model: str, *, cooldown_s: float, daily_budget: int, now: float | None = None
    ) -> str | None:
        """Why no retrain may start now (cooldown, daily budget), or None."""
        with self._db() as db:
            return self._blocker(db, model, cooldown_s, daily_budget, time.time() if now is None else now)

    @staticmethod
    def _blocker(db: Connection, model: str, cooldown_s: float, daily_budget: int, now: float) -> str | None:
        last, today = db.execute(
            text(
                "SELECT MAX(decided_at), SUM(CASE WHEN decided_at >= :day THEN 1 ELSE 0 END) FROM alerts"
                " WHERE model = :model AND decision = 'retrain'"
            ),
            {"day": _day_start(now), "model": model},
        ).one()
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
        with self._db() as db:
            n = db.execute(
                text(
                    "SELECT COUNT(*) FROM alerts WHERE model = :model AND decision = 'retrain'"
                    " AND decided_at >= :day"
                ),
                {"model": model, "day": _day_start(now)},
            ).scalar_one()
        return int(n)

    def unlaunched(self, model: str) -> list[dict[str, Any]]:
        """Accepted alerts whose training run has not been seen yet (key, run_id, decided_at)."""
        with self._db() as db:
            rows = db.execute(
                text(
                    "SELECT key, run_id, decided_at FROM alerts WHERE model = :model AND decision = 'retrain'"
                    " AND launched_at IS NULL"
                ),
                {"model": model},
            ).mappings()
            return [dict(r) for r in rows]

    def mark_launched(self, key: str, now: float | None = None) -> None:
        """Record that the retraining run of alert ``key`` was created (its launch time)."""
        with self._db() as db:
            db.execute(
                text("UPDATE alerts SET launched_at = :now WHERE key = :key"),
                {"now": time.time() if now is None else now, "key": key},
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
                text(
                    "UPDATE alerts SET decision='suppressed', reason=:reason, decided_at=:now WHERE key=:key"
                ),
                {"reason": reason, "now": now, "key": key},
            )

        with self._db() as db:
            for row in (
                db.execute(
                    text(
                        "SELECT key, alert, run_id, decided_at FROM alerts WHERE model = :model"
                        " AND decision = 'retrain' AND launched_at IS NULL ORDER BY decided_at DESC"
                    ),
                    {"model": model},
                )
                .mappings()
                .all()
            ):
                if accepted is None and now - row["decided_at"] < self.relaunch_within_s:
                    accepted = {**json.loads(row["alert"]), "run_id": row["run_id"]}
                else:
                    suppress(row["key"], f"its training run {row['run_id']} was never created")
            if accepted is not None:
                return Decision(accepted, suppressed)
            rows = (
                db.execute(
                    text(
                        "SELECT key, alert, received_at FROM alerts WHERE model = :model AND decision IS NULL"
                        " ORDER BY received_at DESC, key"
                    ),
                    {"model": model},
                )
                .mappings()
                .all()
            )
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
                        text(
                            "UPDATE alerts SET decision='retrain', reason='starts a retrain', decided_at=:now,"
                            " run_id=:run_id WHERE key=:key"
                        ),
                        {"now": now, "run_id": accepted["run_id"], "key": row["key"]},
                    )
                else:
                    suppress(
                        row["key"], f"coalesced into the retrain started for alert {accepted['fingerprint']}"
                    )
        return Decision(accepted, suppressed)

    def entries(self, model: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Newest first: what the UI shows."""
        sql = (
            "SELECT key, model, name, fingerprint, starts_at, source, received_at, seen, decision, reason,"
            " decided_at, run_id, alert FROM alerts"
        )
        args: dict[str, Any] = {"limit": limit}
        if model:
            sql, args["model"] = sql + " WHERE model = :model", model
        with self._db() as db:
            result = db.execute(text(sql + " ORDER BY received_at DESC, key LIMIT :limit"), args)
            rows = [dict(r) for r in result.mappings()]
        for d in rows:
            d["alert"] = json.loads(d["alert"])
            d["received"] = utc_iso(d["received_at"])
            d["decided"] = utc_iso(d["decided_at"]) if d["decided_at"] else ""
        return rows


def _day_start(now: float) -> float:
    """Start of the UTC day of ``now`` (what the daily budget counts from)."""
    return datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _redacted(url: str) -> str:
    """``url`` with any password masked, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_ledger(home: Path, url: str | None = None) -> AlertLedger:
    """The alert ledger: the database at ``url`` (``alert_ledger_url``), else ``<home>/alerts/ledger.db``."""
    return AlertLedger(ledger_url(home, url))
