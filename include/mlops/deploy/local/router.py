"""The local target's endpoint: a small reverse proxy splitting traffic between model servers by weight.

It reads the routing table ``routes.json`` that :class:`~mlops.deploy.local.target.LocalTarget` writes
(atomically) and re-reads it whenever the file changes, so a weight change takes effect with the next
request and no restart. Each request goes to one backend drawn by weight; a connection-level failure
(the backend is gone or restarting) is retried once on another live backend, so removing a backend
never fails a client request (scoring requests are idempotent). Every response carries
``x-mlops-variant`` and ``x-mlops-model-version``.

Own routes under ``/router/``: ``health``, ``routes`` (the table), ``metrics`` (Prometheus: requests by
variant, model version and status; upstream failures). Everything else is forwarded.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.deploy.local.protocol import MAX_HEAD_BYTES, GuardedHttpToolsProtocol
from mlops.serving.settings import DEFAULT_MAX_BODY_BYTES

log = logging.getLogger(__name__)

#: Request line and headers together: 431 beyond it (the protocol refuses heads that never complete).
MAX_HEADER_BYTES = MAX_HEAD_BYTES

_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
#: Log at most one line per backend per this many seconds about failures (a dead backend under load
#: would otherwise write a line per request: 4.4 MB in 50 s in a probe).
FAILURE_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Route:
    """One backend in the routing table, with its traffic weight (percent)."""

    role: str
    version: str
    url: str
    weight: int


class RoutingTable:
    """``routes.json``, re-read when its mtime or size changes (a stat per request: microseconds)."""

    def __init__(self, path: Path):
        self.path = path
        self._key: tuple[int, int] | None = None
        self.routes: list[Route] = []

    def current(self) -> list[Route]:
        """The routes as the file holds them now; none while there is no file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._key, self.routes = None, []
            return self.routes
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            try:
                data = json.loads(self.path.read_text())
                self.routes = [
                    Route(role, str(b["version"]), b["url"], int(b.get("weight", 0)))
                    for role, b in data.get("backends", {}).items()
                ]
                self._key = key
            except (OSError, ValueError, KeyError, TypeError) as exc:  # keep the last good table
                log.warning("router: cannot read %s (%s); keeping the previous routes", self.path, exc)
        return self.routes

    def pick(self, exclude: set[str] = frozenset()) -> Route | None:  # type: ignore[assignment]
        """A route drawn by weight, never one in ``exclude``; any other when no weighted one is left."""
        routes = [r for r in self.current() if r.weight > 0 and r.role not in exclude]
        if not routes:
            # Nothing weighted left (e.g. the only weighted backend just failed): any other backend.
            routes = [r for r in self.current() if r.role not in exclude]
            return routes[0] if routes else None
        total = sum(r.weight for r in routes)
        x = random.uniform(0, total)
        for r in routes:
            x -= r.weight
            if x <= 0:
                return r
        return routes[-1]


class Router:
    """The ASGI application."""

    def __init__(
        self, routes_path: Path, timeout: float = 30.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ):
        self.table = RoutingTable(routes_path)
        self.timeout = timeout
        self.max_body_bytes = (
            max_body_bytes  # the model servers' limit: a bigger body would only be refused there
        )
        self._failures = _FailureLog()
        self._client: Any = None
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_router_requests",
            "Requests forwarded, by backend role (variant), model version and status.",
            ["variant", "model_version", "status"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "mlops_router_upstream_errors",
            "Connection failures to a backend (the request was retried on another one).",
            ["variant", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_router_request_duration_seconds",
            "Time through the router, by backend role.",
            ["variant"],
            registry=self.registry,
        )

    async def __call__(self, scope, receive, send) -> None:
        """ASGI entry point: lifespan events, the router's own ``/router/*`` routes, else forwarding."""
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    import httpx

                    self._client = httpx.AsyncClient(
                        timeout=self.timeout,
                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                        trust_env=False,
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        head = len(scope.get("raw_path") or path) + len(scope.get("query_string", b""))
        head += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if head > MAX_HEADER_BYTES:  # a complete head the protocol parsed in one piece
            msg = b"request line and headers larger than %d bytes" % MAX_HEADER_BYTES
            await _respond(
                send, 431, b'{"error_code":"REQUEST_HEADER_FIELDS_TOO_LARGE","message":"%s"}' % msg
            )
            return
        if path.startswith("/router/"):
            await self._own(path, send)
            return
        await self._forward(scope, receive, send)

    async def _own(self, path: str, send) -> None:
        if path == "/router/health":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/router/routes":
            body = json.dumps([r.__dict__ for r in self.table.current()]).encode()
            await _respond(send, 200, body)
        elif path == "/router/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            await _respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())
        else:
            await _respond(send, 404, b'{"error_code":"NOT_FOUND","message":"unknown router route"}')

    async def _forward(self, scope, receive, send) -> None:
        import httpx

        too_large = (
            b'{"error_code":"PAYLOAD_TOO_LARGE","message":"request body larger than %d bytes"}'
            % self.max_body_bytes
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _respond(send, 413, too_large)  # refused before a byte of the body is read
            return
        body = bytearray()
        while True:  # read as it streams in, and stop at the limit: at most max_body_bytes held per request
            msg = await receive()
            body += msg.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _respond(send, 413, too_large)
                return
            if not msg.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        query = scope.get("query_string", b"")
        tried: set[str] = set()
        t0 = time.perf_counter()
        for _ in range(3):
            route = self.table.pick(exclude=tried)
            if route is None:
                break
            url = route.url + scope["path"] + (("?" + query.decode("latin-1")) if query else "")
            try:
                resp = await self._client.request(scope["method"], url, content=bytes(body), headers=headers)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ConnectTimeout) as exc:
                tried.add(route.role)
                self.upstream_errors.labels(route.role, route.version).inc()
                self._failures.log(route, exc)
                continue
            except httpx.TimeoutException:
                self.requests.labels(route.role, route.version, "504").inc()
                await _respond(
                    send, 504, b'{"error_code":"UPSTREAM_TIMEOUT","message":"model server timed out"}'
                )
                return
            if resp.status_code == 503 and len(tried) < 2:  # still loading (e.g. just restarted): elsewhere
                tried.add(route.role)
                self.upstream_errors.labels(route.role, route.version).inc()
                continue
            self.requests.labels(route.role, route.version, str(resp.status_code)).inc()
            self.latency.labels(route.role).observe(time.perf_counter() - t0)
            out = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in resp.headers.items()
                if k.encode("latin-1") not in _HOP_BY_HOP
            ]
            out += [
                (b"content-length", str(len(resp.content)).encode()),
                (b"x-mlops-variant", route.role.encode()),
                (b"x-mlops-model-version", route.version.encode()),
            ]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            await send({"type": "http.response.body", "body": resp.content})
            return
        await _respond(send, 503, b'{"error_code":"NO_BACKEND","message":"no model server is available"}')


class _FailureLog:
    """Backend failures logged at most once per backend per interval, with how many were left unlogged."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL_S):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def log(self, route: Route, exc: Exception, now: float | None = None) -> bool:
        """Log this failure unless one of the same backend was logged within the interval (then count it)."""
        now = time.monotonic() if now is None else now
        key = f"{route.role} (v{route.version})"
        if now - self._last.get(key, -self.interval) < self.interval:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return False
        more = self._unlogged.pop(key, 0)
        self._last[key] = now
        log.warning(
            "router: %s failed: %s; retrying elsewhere%s",
            key,
            exc,
            f" ({more} more failures of it in the last {self.interval:g} s not logged)" if more else "",
        )
        return True


async def _respond(send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def run(routes_path: Path, host: str, port: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> int:
    """Serve the router until SIGTERM (uvicorn, one process: the work is I/O)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("router on http://%s:%d, routes from %s", host, port, routes_path)
    uvicorn.run(
        Router(routes_path, max_body_bytes=max_body_bytes),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=5,
        http=GuardedHttpToolsProtocol,  # header-read timeout and head size cap (httptools, like "auto")
        lifespan="on",
    )
    return 0
