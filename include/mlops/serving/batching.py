"""Concurrent requests coalesced into one model call, in the one model thread of a worker.

A scikit-learn pipeline costs about the same for 1 row and for 50 (here ~5 ms + ~3 us a row), and
``predict`` of a fitted pipeline is row-independent, so the rows of the requests waiting when the
model thread is free are merged into one call (up to ``max_batch_rows`` rows) and every request gets
exactly the rows it would get alone. Under load a call waits up to :data:`MAX_LINGER_S` for the
requests that are on their way back (:meth:`Batcher._linger`), which doubles the rows per call of
closed-loop clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.serving.metrics import Metrics
    from mlops.serving.model import LoadedModel

log = logging.getLogger(__name__)

#: Longest wait for more rows before a model call, once under load (see Batcher._linger).
MAX_LINGER_S = 0.002
#: Half-life of the "requests recently in the server at once" estimate the wait is based on.
ACTIVE_HALF_LIFE_S = 0.5


@dataclass
class Pending:
    """One request's checked columns, waiting for its share of a model call."""

    columns: dict[str, list]
    rows: int
    future: asyncio.Future


class Batcher:
    """Queues requests on the event loop and runs ``predict_batch`` on batches of them in ``executor``.

    ``predict_batch(batch)`` returns one result per item, each ``(predictions, scores)`` or the
    exception that item gets.
    """

    def __init__(
        self, executor: Executor, predict_batch: Callable[[list[Pending]], list], max_batch_rows: int
    ):
        self.executor = executor
        self.predict_batch = predict_batch
        self.limit = max(1, max_batch_rows)
        self._pending: list[Pending] = []
        self._draining = False
        self._active = 0  # requests between joining the queue and getting their result
        self._recent_active = 0.0  # peak of _active, decaying with ACTIVE_HALF_LIFE_S
        self._recent_at = 0.0
        self._call_s = 0.0  # moving average of one model call (seconds)
        self._arrival: asyncio.Future | None = None

    async def run(self, columns: dict[str, list], rows: int) -> Any:
        """The (predictions, scores) of these rows, from a model call shared with concurrent requests."""
        loop = asyncio.get_running_loop()
        item = Pending(columns, rows, loop.create_future())
        self._pending.append(item)
        self._active += 1
        if self._active > self._recent_active:
            self._recent_active, self._recent_at = self._active, loop.time()
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        try:
            return await item.future
        finally:
            self._active -= 1

    async def _linger(self, limit: int) -> None:
        """Under load, wait a moment for the requests that are on their way back before a model call.

        A model call costs about the same for 1 row and for 50, and closed-loop clients split into
        groups that take turns (one group is answered and sends its next requests while the other is
        in the model): without this wait every call would take only the group that happens to be
        queued. Waits only while fewer requests are queued than were recently in the server at once,
        never longer than ``MAX_LINGER_S`` or half a model call, and not when the batch is full.
        """
        pending = self._pending
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._recent_active *= 0.5 ** ((now - self._recent_at) / ACTIVE_HALF_LIFE_S)
        self._recent_at = now
        wait = min(MAX_LINGER_S, self._call_s / 2)
        if wait <= 0 or len(pending) >= round(self._recent_active):
            return
        deadline = now + wait
        while len(pending) < round(self._recent_active):
            if sum(it.rows for it in pending) + pending[-1].rows > limit:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival = loop.create_future()
            try:
                await asyncio.wait_for(self._arrival, remaining)
            except TimeoutError:
                return
            finally:
                self._arrival = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.limit
        try:
            while self._pending:
                if limit > 1:
                    await self._linger(limit)
                batch, rows = [self._pending[0]], self._pending[0].rows
                i = 1
                while i < len(self._pending) and rows + self._pending[i].rows <= limit:
                    rows += self._pending[i].rows
                    batch.append(self._pending[i])
                    i += 1
                del self._pending[:i]
                t0 = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self.executor, self.predict_batch, batch)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
                    results = [exc] * len(batch)
                self._call_s += 0.2 * (time.perf_counter() - t0 - self._call_s)
                for it, res in zip(batch, results, strict=True):
                    if it.future.done():
                        continue
                    if isinstance(res, BaseException):
                        it.future.set_exception(res)
                    else:
                        it.future.set_result(res)
        finally:
            self._draining = False


def predict_batch(model: LoadedModel, metrics: Metrics, batch: list[Pending]) -> list:
    """One model call for the whole batch (in the model thread); a failing batch is retried per item."""
    if len(batch) == 1:
        columns = batch[0].columns
    else:
        columns = {}
        for c in model.columns:
            merged = columns[c.name] = []
            for it in batch:
                merged.extend(it.columns[c.name])
    t0 = time.perf_counter()
    try:
        arrays = model.arrays(columns)
        preds, score = model.predict(columns, arrays)
    except Exception as exc:  # noqa: BLE001
        if len(batch) == 1:
            return [exc]
        return [r for it in batch for r in predict_batch(model, metrics, [it])]
    metrics.predict_seconds.observe(time.perf_counter() - t0)
    metrics.batch_rows.observe(len(preds))
    try:
        metrics.observe_batch(columns, model.columns, preds, score, model.np, arrays)
    except Exception:  # noqa: BLE001 - metrics never fail a prediction
        log.exception("feature metrics failed")
    preds_list = preds.tolist()
    score_list = None if score is None else score.tolist()
    out, start = [], 0
    for it in batch:
        end = start + it.rows
        out.append((preds_list[start:end], None if score_list is None else score_list[start:end]))
        start = end
    return out
