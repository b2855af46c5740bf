"""The model server's ASGI app: one MLflow scikit-learn model by URI (``mlops serve``).

Endpoints (all JSON unless said otherwise):

``POST /invocations``
    The payloads of ``mlflow models serve`` (``dataframe_split``, ``dataframe_records``,
    ``instances``, ``inputs``; ``params`` ignored), answered as ``{"predictions": [...]}``, so a
    client of MLflow's scoring server switches with no change (JSON only: CSV and Parquet bodies get
    415).
``POST /predict``
    ``{"instances": [{...}, ...]}`` (or any shape ``/invocations`` takes) answered as
    ``{"predictions": [{"class": 1, "score": 0.83}, ...], "model_version": ..., "variant": ...}``;
    ``score`` is the probability of the positive class.
``GET /health`` (also ``/ping``)
    Liveness: 200 as soon as the process answers.
``GET /ready``
    200 once the model is loaded and warmed up (in every worker of a multi-worker server), 503 before.
``GET /version``
    Model name, version, URI, run id, variant, image digest (``MLOPS_IMAGE_DIGEST``).
``GET /metrics``
    Prometheus text (names in :mod:`mlops.serving.metrics`), summed over every worker process.
``GET /openapi.json``
    OpenAPI 3.1 description of every route and payload, with the model's own input columns.

With an API token (``MLOPS_SERVE_API_TOKEN`` or ``--api-token-file``) the scoring routes need
``Authorization: Bearer <token>`` (401 otherwise); probes and scrapers stay open unless
``--protect-metrics``. Limits: body bytes (413), rows per request (413), scoring time (504).

Bodies and their 4xx: :mod:`~mlops.serving.payloads`; the model: :mod:`~mlops.serving.model`;
batching of concurrent requests into one model call: :mod:`~mlops.serving.batching`; the sampled
prediction log: :mod:`~mlops.serving.predlog`; running it: :mod:`~mlops.serving.runner`.

Throughput: the per-request work stays small (orjson, no pandas on the request path, one pure ASGI
callable with no middleware stack). Model calls run in one thread per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from mlops.serving import payloads
from mlops.serving.batching import Batcher, Pending, predict_batch
from mlops.serving.metrics import Metrics
from mlops.serving.model import LoadedModel, ResolvedModel, name_from_uri, resolve_model, version_from_uri
from mlops.serving.payloads import InputError, error_body
from mlops.serving.predlog import PredictionLog, predictions_dir
from mlops.serving.settings import ENV_IMAGE_DIGEST, ServingSettings
from mlops.serving.workers import live_ready_markers, ready_marker

log = logging.getLogger(__name__)

Response = tuple[int, bytes, list[tuple[bytes, bytes]]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
#: path -> (method, endpoint: the ``_<name>`` method of :class:`ServingApp`)
_ROUTES = {
    "/invocations": ("POST", "invocations"),
    "/predict": ("POST", "predict"),
    "/health": ("GET", "health"),
    "/ping": ("GET", "health"),
    "/ready": ("GET", "ready"),
    "/version": ("GET", "version"),
    "/metrics": ("GET", "metrics"),
    "/openapi.json": ("GET", "openapi"),
}


def create_app(settings: ServingSettings | None = None, **kwargs: Any) -> ServingApp:
    """The ASGI app for ``settings`` (or ``ServingSettings.from_env(**kwargs)``)."""
    if settings is None:
        settings = ServingSettings.from_env(**kwargs)
    elif kwargs:
        settings = replace(settings, **kwargs)
    return ServingApp(settings)


class ServingApp:
    """The ASGI application (a plain callable: no framework routing or middleware on the hot path)."""

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.model: LoadedModel | None = None
        self.resolved: ResolvedModel | None = None
        self.load_error: str | None = None
        self.ready = False
        self.model_name = settings.model_name or name_from_uri(settings.model_uri)
        self.model_version = settings.model_version or version_from_uri(settings.model_uri) or "unknown"
        self.registry: Any = None  # the app's one prometheus_client CollectorRegistry, made at startup
        self.metrics: Metrics | None = None
        self.prediction_log: PredictionLog | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: Batcher | None = None
        self._ready_marker: Path | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    def startup(self) -> None:
        """Start the model thread and load + warm the model in it (``/ready`` says 503 until done)."""
        if self._started:
            return
        from prometheus_client import CollectorRegistry

        self._started = True
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = self._new_metrics()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._batcher = Batcher(self._executor, self._predict_batch, self.settings.max_batch_rows)
        self._load_future = self._executor.submit(self._load)

    def _predict_batch(self, batch: list[Pending]) -> list:
        assert self.model is not None and self.metrics is not None  # batches run once the model is ready
        return predict_batch(self.model, self.metrics, batch)

    def _new_metrics(self) -> Metrics:
        s = self.settings
        return Metrics(s.variant, self.model_version, s.max_categories, registry=self.registry)

    def _load(self) -> None:
        s = self.settings
        try:
            t0 = time.monotonic()
            if s.model_path:
                resolved = ResolvedModel(s.model_path, self.model_name, s.model_version, s.model_uri)
            else:
                resolved = resolve_model(s.model_uri, s.tracking_uri)
            model = LoadedModel(resolved, threads=s.model_threads)
            if not s.model_name:
                self.model_name = resolved.name
            if not s.model_version and resolved.version:
                self.model_version = resolved.version
            if self.metrics is not None and self.metrics.base[1] != self.model_version:
                self.metrics.unregister()
                self.metrics = self._new_metrics()
            if self.metrics is not None:
                self.metrics.set_known_categories(model.known_categories)
            model.warm_up()
            gc.collect()
            gc.freeze()  # the model's objects leave the collector's generations: shorter GC pauses
            self.resolved, self.model = resolved, model
            if s.sample_rate > 0:
                self.prediction_log = self._open_prediction_log()
            if self.metrics is not None:
                self.metrics.info.labels(self.model_name, self.model_version, s.variant, s.model_uri).set(1)
            self.ready = True
            if s.state_dir:
                self._ready_marker = ready_marker(s.state_dir, os.getpid())
                self._ready_marker.touch()
            log.info(
                "serving %s version %s (%s) as %s, ready in %.2fs",
                self.model_name,
                self.model_version,
                s.model_uri,
                s.variant,
                time.monotonic() - t0,
            )
        except Exception as exc:  # noqa: BLE001 - reported by /ready, the process stays live
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("cannot load model %s", s.model_uri)

    def _open_prediction_log(self) -> PredictionLog:
        s, m = self.settings, self.metrics
        if s.predictions_dir:
            folder = s.predictions_dir
        else:
            from mlops.config.settings import get_settings

            folder = predictions_dir(get_settings().home, self.model_name)
        return PredictionLog(
            folder,
            model=self.model_name,
            model_version=self.model_version,
            variant=s.variant,
            queue_size=s.log_queue_size,
            rotate_bytes=s.log_rotate_bytes,
            on_written=m.log_records.inc if m else None,
            on_dropped=m.log_dropped.inc if m else None,
            on_failed=m.log_failed.inc if m else None,
        )

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Block until the model is loaded (for tests and embedding); True if ready."""
        fut = getattr(self, "_load_future", None)
        if fut is not None:
            with contextlib.suppress(Exception):
                fut.result(timeout=timeout)
        return self.ready

    def shutdown(self) -> None:
        """Remove the ready marker, flush the prediction log, stop the model thread."""
        if self._ready_marker is not None:
            with contextlib.suppress(OSError):
                self._ready_marker.unlink()
        if self.prediction_log is not None:
            self.prediction_log.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
        self._started = False

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        """ASGI entry point: HTTP requests and lifespan events."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:  # noqa: BLE001
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        t0 = time.perf_counter()
        if not self._started:  # no lifespan (some test clients): start on first use
            self.startup()
        metrics = self.metrics
        assert metrics is not None
        path = scope["path"]
        entry = _ROUTES.get(path)
        route = path if entry else "other"
        metrics.in_flight.inc()
        status = 500
        try:
            if entry is None:
                status, body, headers = 404, error_body("NOT_FOUND", f"no route {path}"), _JSON_HEADERS
            elif path in self.settings.protected and not self._authorized(scope):
                status, body, headers = (
                    401,
                    error_body("UNAUTHENTICATED", f"{path} needs 'Authorization: Bearer <API token>'"),
                    [*_JSON_HEADERS, (b"www-authenticate", b"Bearer")],
                )
            elif scope["method"] != entry[0]:
                status, body, headers = (
                    405,
                    error_body("METHOD_NOT_ALLOWED", f"{path} takes {entry[0]}"),
                    [*_JSON_HEADERS, (b"allow", entry[0].encode())],
                )
            else:
                status, body, headers = await getattr(self, "_" + entry[1])(scope, receive)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.in_flight.dec()
            counter, hist = metrics.http(route, status)
            counter.inc()
            hist.observe(time.perf_counter() - t0)

    def _authorized(self, scope) -> bool:
        token = self.settings.api_token
        if token is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())
        return False

    # -- endpoints ---------------------------------------------------------------------------------

    async def _openapi(self, scope, receive) -> Response:
        from mlops.serving.openapi import openapi_document

        doc = openapi_document(self.model.columns if self.model else None, self.settings, self.model_name)
        return 200, orjson.dumps(doc), _JSON_HEADERS

    async def _health(self, scope, receive) -> Response:
        return 200, b'{"status":"ok"}', _JSON_HEADERS

    async def _ready(self, scope, receive) -> Response:
        if not self.ready:
            reason = self.load_error or "model loading"
            return 503, orjson.dumps({"ready": False, "reason": reason}), _JSON_HEADERS
        s = self.settings
        if s.state_dir and s.workers > 1:
            live = live_ready_markers(Path(s.state_dir))
            if live < s.workers:
                body = {"ready": False, "reason": f"{live} of {s.workers} workers ready"}
                return 503, orjson.dumps(body), _JSON_HEADERS
        return 200, orjson.dumps({"ready": True, "model_version": self.model_version}), _JSON_HEADERS

    async def _version(self, scope, receive) -> Response:
        s = self.settings
        body = {
            "model": self.model_name,
            "model_version": self.model_version,
            "model_uri": s.model_uri,
            "run_id": self.model.run_id if self.model else None,
            "variant": s.variant,
            "image_digest": s.image_digest or os.environ.get(ENV_IMAGE_DIGEST) or None,
            "ready": self.ready,
        }
        return 200, orjson.dumps(body), _JSON_HEADERS

    async def _metrics(self, scope, receive) -> Response:
        assert self.metrics is not None
        body, ctype = self.metrics.render()
        return 200, body, [(b"content-type", ctype.encode())]

    async def _invocations(self, scope, receive) -> Response:
        return await self._score(scope, receive, simple=False)

    async def _predict(self, scope, receive) -> Response:
        return await self._score(scope, receive, simple=True)

    async def _score(self, scope, receive, simple: bool) -> Response:
        try:
            body = await payloads.read_body(scope, receive, self.settings.max_body_bytes)
            if not self.ready or self.model is None or self._batcher is None:
                reason = self.load_error or "the model is still loading"
                return 503, error_body("TEMPORARILY_UNAVAILABLE", reason), _JSON_HEADERS
            columns, rows = payloads.parse_payload(payloads.decode_json(body), self.model.columns)
            if rows > self.settings.max_rows:
                raise InputError(413, f"{rows} rows in one request; at most {self.settings.max_rows}")
        except InputError as exc:
            return exc.status, exc.body(), _JSON_HEADERS
        if rows:
            try:
                preds, scores = await asyncio.wait_for(
                    self._batcher.run(columns, rows), timeout=self.settings.request_timeout_s
                )
            except TimeoutError:
                message = f"scoring took longer than {self.settings.request_timeout_s:g} s"
                return 504, error_body("TIMEOUT", message), _JSON_HEADERS
            except Exception as exc:  # noqa: BLE001 - a model failure on checked input: a server error
                log.exception("model call failed")
                return 500, error_body("INTERNAL_ERROR", f"model error: {type(exc).__name__}"), _JSON_HEADERS
        else:
            preds, scores = [], None
        self._log_sample(scope, columns, preds, scores, "/predict" if simple else "/invocations")
        out = payloads.scoring_response(
            preds, scores, simple=simple, model_version=self.model_version, variant=self.settings.variant
        )
        return 200, out, _JSON_HEADERS

    def _log_sample(self, scope, columns, preds, scores, route: str) -> None:
        plog = self.prediction_log
        if plog is None or not len(preds):
            return
        rate = self.settings.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return
        request_id = None  # none given: the log thread makes one (off the event loop)
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                request_id = v.decode("latin-1")[:128] or None
                break
        plog.submit((time.time(), request_id, route, columns, preds, scores))
