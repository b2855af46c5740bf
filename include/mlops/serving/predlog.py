"""The prediction log: its file layout and record format, the server's writer, and every reader.

Layout (the contract between the server and the monitors, defined here only):

* folder: ``$MLOPS_HOME/predictions/<model>/`` (:func:`predictions_dir`; ``mlops serve
  --predictions-dir`` may put it elsewhere);
* files: ``predictions-<YYYYmmddTHH>-<host>-<pid>-<part>.jsonl`` (:func:`log_file_name`; UTC hour of the
  records, a new ``part`` past the rotation size), so several workers never share a file and a
  monitor reads a window by name; readers take every ``*.jsonl`` file of the folder;
* records: one JSON object per line and per row, with :data:`RECORD_FIELDS`: ``ts`` (ISO-8601 UTC
  with microseconds and ``Z``, :func:`format_ts`, so that timestamps compare as strings),
  ``request_id``, ``route``, ``model``, ``model_version``, ``variant``, ``inputs`` (feature ->
  value), ``prediction`` and ``score`` (``null`` without probabilities). A torn last line (a crash
  mid-write) is skipped by the readers.

:class:`PredictionLog` writes sampled records from one background thread with a bounded queue (full
queue = dropped and counted); the thread wakes at most every :data:`LOG_BATCH_INTERVAL_S` and
serialises column by column. A write that fails (disk full, folder gone) never reaches a request: the
batch is lost and counted (``on_failed``), the file is cut back to its last complete line (no torn
line is left in the middle), an error is logged at most every :data:`FAILURE_LOG_INTERVAL_S`, and
writing resumes by itself once space is back (the next try after :data:`RETRY_AFTER_FAILURE_S`).
:func:`count_logged`, :func:`logged_frame` and :func:`recent_logged_rows` read them back (drift monitoring, the rollout's replay).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".jsonl"
#: What the readers open in a log folder.
READ_GLOB = f"*{FILE_SUFFIX}"
RECORD_FIELDS = (
    "ts", "request_id", "route", "model", "model_version", "variant", "inputs", "prediction", "score",
)  # fmt: skip
#: The prediction-log thread wakes at most this often and writes through a buffer of this size, so
#: under load it takes the GIL (from the model and event-loop threads) once per many requests.
LOG_BATCH_INTERVAL_S = 0.05
LOG_BUFFER_BYTES = 1 << 20
#: After a failed write: records are counted as failed, not written, for this long; the error is logged
#: at most this often.
RETRY_AFTER_FAILURE_S = 5.0
FAILURE_LOG_INTERVAL_S = 60.0
#: :func:`recent_logged_rows` reads at most this much of the end of each file.
TAIL_BYTES = 4 << 20


def predictions_dir(home: Path, model: str) -> Path:
    """The default log folder of ``model`` under ``$MLOPS_HOME``."""
    return Path(home) / "predictions" / model


def log_file_name(hour: str, tag: str, part: int) -> str:
    """``predictions-<hour>-<tag>-<part>.jsonl`` (``hour``: ``YYYYmmddTHH`` UTC; ``tag``: host-pid)."""
    return f"{FILE_PREFIX}{hour}-{tag}-{part:03d}{FILE_SUFFIX}"


def format_ts(when: datetime) -> str:
    """A record's ``ts``: ISO-8601 UTC with microseconds and ``Z`` (sorts as it compares)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ writer


class PredictionLog:
    """Sampled prediction records written as JSONL by one background thread, off the request path.

    ``submit((ts, request_id, route, columns, predictions, scores))`` queues the rows of one request
    (``columns``: feature -> values); see the module docstring for the files and lines it makes.
    """

    _STOP = object()

    def __init__(
        self,
        folder: Path,
        *,
        model: str,
        model_version: str,
        variant: str,
        queue_size: int = 10_000,
        rotate_bytes: int = 64 << 20,
        on_written: Callable[[int], Any] | None = None,
        on_dropped: Callable[[], Any] | None = None,
        on_failed: Callable[[int], Any] | None = None,
    ):
        self.folder = Path(folder)
        self.static = {"model": model, "model_version": model_version, "variant": variant}
        self.rotate_bytes = rotate_bytes
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0
        self.failed = 0  # records lost because writing failed (disk full, ...)
        self.last_error: str | None = None
        self._on_written, self._on_dropped, self._on_failed = on_written, on_dropped, on_failed
        self._pending = 0  # records written into the buffer since the last flush
        self._good_size = 0  # size of the open file at the last successful flush: whole lines only
        self._paused_until = 0.0
        self._failures_unlogged = 0
        self._last_failure_log = 0.0
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._file: IO[bytes] | None = None
        self._file_hour: str | None = None
        self._part = 0
        self._templates: dict[tuple[tuple[str, ...], tuple[bool, ...]], bytes] = {}
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, record: tuple) -> bool:
        """Queue one request's rows; False (and counted) when the queue is full."""
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped()
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the thread."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self.queue.put(self._STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _open(self, hour: str) -> IO[bytes]:
        if self._file is not None and self._file_hour == hour and self._file.tell() < self.rotate_bytes:
            return self._file
        if self._file is not None:
            self._file.close()
            self._part = self._part + 1 if self._file_hour == hour else 0
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.folder / log_file_name(hour, self._tag, self._part)
            if not path.exists() or path.stat().st_size < self.rotate_bytes:
                break
            self._part += 1
        # kept open across records, closed on rotation/stop; flushed after every batch of records
        self._file = open(path, "ab", buffering=LOG_BUFFER_BYTES)  # noqa: SIM115
        self._file_hour = hour
        self._good_size = self._file.tell()
        return self._file

    def _write(self, record: tuple) -> None:
        ts, request_id, route, columns, preds, scores = record
        when = datetime.fromtimestamp(ts, UTC)
        before = self._file
        f = self._open(when.strftime("%Y%m%dT%H"))
        if before is not None and f is not before:  # rotated: closing the old file wrote its records
            self._committed()
        # Columnar: each column is serialised in one go, then every line is one bytes %-format of a
        # per-record template with the row's values (the fields shared by the record are in it once).
        head = orjson.dumps(
            {
                "ts": format_ts(when),
                "request_id": request_id or uuid.uuid4().hex,
                "route": route,
                **self.static,
            }
        )
        names = tuple(columns)
        cols = [_json_column(columns[n]) for n in names]
        quoted = tuple(q for _, q in cols)
        values: list[Any] = [v for v, _ in cols]
        values.append(_json_column(preds, strings=False)[0])
        values.append(itertools.repeat(b"null") if scores is None else _json_column(scores, strings=False)[0])
        template = head[:-1].replace(b"%", b"%%") + self._row_template(names, quoted)
        lines = [template % row for row in zip(*values)]  # noqa: B905 - the score column may be repeat()
        f.write(b"\n".join(lines) + b"\n")
        self._pending += len(lines)

    def _row_template(self, names: tuple[str, ...], quoted: tuple[bool, ...]) -> bytes:
        """``,"inputs":{"a":%s,"b":"%s",...},"prediction":%s,"score":%s}`` for these columns."""
        key = (names, quoted)
        tpl = self._templates.get(key)
        if tpl is None:
            fields = [
                orjson.dumps(n).replace(b"%", b"%%") + (b':"%s"' if q else b":%s")
                for n, q in zip(names, quoted, strict=True)
            ]
            tpl = self._templates[key] = b',"inputs":{' + b",".join(fields) + b'},"prediction":%s,"score":%s}'
        return tpl

    def _committed(self) -> None:
        """The buffered records reached the file: count them as written (and remember its size)."""
        if self._pending:
            self.written += self._pending
            if self._on_written is not None:
                self._on_written(self._pending)
            self._pending = 0
        if self._file is not None:
            self._good_size = self._file.tell()

    def _fail(self, exc: BaseException, records: int) -> None:
        """A write failed: drop what the buffer held, cut the file back to whole lines, count, log."""
        lost = self._pending + records
        self._pending = 0
        f, self._file = self._file, None
        if f is not None:
            name = f.name
            with contextlib.suppress(OSError):
                f.close()  # flushes again: may fail again, or write part of the buffer
            with contextlib.suppress(OSError):
                os.truncate(name, self._good_size)  # frees space; no torn line in the middle
        self._count_failed(lost)
        self.last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        self._paused_until = now + RETRY_AFTER_FAILURE_S
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
            log.error(
                "prediction log: cannot write to %s (%s): %d record(s) lost since the last report; "
                "serving continues, writing resumes when possible",
                self.folder,
                self.last_error,
                self._failures_unlogged,
            )
            self._failures_unlogged = 0
            self._last_failure_log = now

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self.queue.get()
            items = [item]
            if item is not self._STOP:
                # Let the records of the next requests pile up: one wake-up of this thread (one GIL
                # hand-over with the model and event-loop threads), one write and one flush for all.
                time.sleep(LOG_BATCH_INTERVAL_S)
            with contextlib.suppress(queue.Empty):
                while len(items) < 5000:
                    items.append(self.queue.get_nowait())
            for it in items:
                if it is self._STOP:
                    stop = True
                    continue
                if time.monotonic() < self._paused_until:  # after a failed write: count, do not retry yet
                    self._count_failed(len(it[4]))
                    continue
                try:
                    self._write(it)
                except OSError as exc:  # disk full, folder removed: lose this batch, never the server
                    self._fail(exc, len(it[4]))
                except Exception:  # noqa: BLE001 - a logging failure must never take the server down
                    log.exception("prediction log: cannot write a record")
            if self._file is not None:
                try:
                    self._file.flush()
                    self._committed()
                except OSError as exc:
                    self._fail(exc, 0)
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._fail(exc, 0)
            else:
                self._file = None
                self._committed()

    def _count_failed(self, records: int) -> None:
        """Rows lost to a write failure: counted (metric) and reported with the next error line."""
        self.failed += records
        self._failures_unlogged += records
        if self._on_failed is not None and records:
            self._on_failed(records)


def _json_column(values: Any, strings: bool = True) -> tuple[list[bytes], bool]:
    """Each value of a column as JSON bytes, from one orjson call of the whole column when it is safe.

    The column's JSON is split where the split is exact: with no string and no nested list or object
    in it, every ``,`` separates two values. With only strings, none holding an escaped quote, every
    ``","`` separates two strings; their contents come back without quotes (the second item is then
    True; not done with ``strings=False``). Otherwise one orjson call per value.
    """
    n = len(values)
    if not n:
        return [], False
    opt = orjson.OPT_SERIALIZE_NUMPY
    data = orjson.dumps(values, option=opt)
    inner = data[1:-1]
    if b'"' not in inner and b"[" not in inner and b"{" not in inner:
        return inner.split(b","), False
    if (
        strings
        and data.startswith(b'["')
        and data.endswith(b'"]')
        and b'\\"' not in inner
        and inner.count(b'","') == n - 1
    ):
        return inner[1:-1].split(b'","'), True
    return [orjson.dumps(v, option=opt) for v in values], False


# ----------------------------------------------------------------------------------------- readers


def _logged_records(folder: Path, since: float, model_version: str) -> Iterator[dict[str, Any]]:
    """Prediction-log records of ``model_version`` with a timestamp >= ``since``, oldest file first."""
    files = sorted(folder.glob(READ_GLOB), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    stamp = format_ts(datetime.fromtimestamp(since, UTC))
    for path in files:
        if path.stat().st_mtime < since:
            continue
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line being written, or a torn tail after a crash
                if str(rec.get("model_version")) != str(model_version) or rec.get("ts", "") < stamp:
                    continue
                if isinstance(rec.get("inputs"), dict):
                    yield rec


def count_logged(folder: Path, since: float, model_version: str) -> int:
    """How many requests of ``model_version`` were logged since ``since`` (epoch seconds)."""
    return sum(1 for _ in _logged_records(folder, since, model_version))


def logged_frame(folder: Path, since: float, model_version: str, max_rows: int = 1_000_000) -> pd.DataFrame:
    """Logged requests of ``model_version`` with a timestamp >= ``since`` (epoch seconds), newest last.

    Columns: every input feature plus ``score``. Files not modified since ``since`` are not opened.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    scores: list[Any] = []
    for rec in _logged_records(folder, since, model_version):
        rows.append(rec["inputs"])
        scores.append(rec.get("score"))
    rows, scores = rows[-max_rows:], scores[-max_rows:]
    frame = pd.DataFrame(rows)
    frame["score"] = pd.to_numeric(pd.Series(scores, dtype="object"), errors="coerce")
    return frame


def recent_logged_rows(folder: Path, n: int) -> list[dict[str, Any]]:
    """The ``n`` most recent input rows of the prediction log (JSONL files, newest first)."""
    rows: list[dict[str, Any]] = []
    files = (
        sorted(folder.glob(READ_GLOB), key=lambda p: p.stat().st_mtime, reverse=True)
        if folder.exists()
        else []
    )
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - TAIL_BYTES))  # the tail is enough: at most 4 MB per file
            lines = fh.read().splitlines()
        if size > TAIL_BYTES:
            lines = lines[1:]  # the first line of a tail is partial
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec.get("inputs"), dict):
                rows.append(rec["inputs"])
            if len(rows) >= n:
                return rows
    return rows
