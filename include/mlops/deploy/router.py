"""The local target's endpoint: a small reverse proxy splitting traffic between model servers by weight.

It reads the routing table ``routes.json`` that :class:`~mlops.deploy.local.LocalTarget` writes
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

log = logging.getLogger(__name__)

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
MAX_BODY_BYTES = 64 << 20


@dataclass(frozen=True)
class Route:
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

    def __init__(self, routes_path: Path, timeout: float = 30.0):
        self.table = RoutingTable(routes_path)
        self.timeout = timeout
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

        body = bytearray()
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _respond(send, 413, b'{"error_code":"PAYLOAD_TOO_LARGE","message":"body too large"}')
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
                log.warning("router: %s (v%s) failed: %s; retrying elsewhere", route.role, route.version, exc)
                continue
            except httpx.TimeoutException:
                self.requests.labels(route.role, route.version, "504").inc()
                await _respond(
                    send, 504, b'{"error_code":"UPSTREAM_TIMEOUT","message":"model server timed out"}'
                )
                return
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


async def _respond(send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def run(routes_path: Path, host: str, port: int) -> int:
    """Serve the router until SIGTERM (uvicorn, one process: the work is I/O)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("router on http://%s:%d, routes from %s", host, port, routes_path)
    uvicorn.run(
        Router(routes_path),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    return 0
