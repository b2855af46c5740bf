"""The local endpoint's router at the ASGI level: body limits and failure logging, against a real dead port."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from mlops.deploy.local.router import Route, Router, _FailureLog


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once closed: connection refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def router(tmp_path):
    routes = tmp_path / "routes.json"
    routes.write_text(
        json.dumps({"backends": {"stable": {"version": "3", "url": _dead_url(), "weight": 100}}})
    )
    return Router(routes, timeout=2.0, max_body_bytes=1000)


def _call(router: Router, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> dict:
    """One request through the router's ASGI interface (lifespan included); the response and body reads."""

    async def go() -> dict:
        sent: list[dict] = []
        queue = list(chunks)
        reads = 0

        async def receive() -> dict:
            nonlocal reads
            reads += 1
            body = queue.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(queue)}

        async def send(msg: dict) -> None:
            sent.append(msg)

        life = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def life_receive() -> dict:
            return next(life)

        async def life_send(msg: dict) -> None:
            if msg["type"] == "lifespan.startup.complete":
                scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
                await router(scope, receive, send)

        await router({"type": "lifespan"}, life_receive, life_send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return {"status": start["status"], "body": body, "reads": reads}

    return asyncio.run(go())


def test_a_declared_oversize_body_is_refused_before_it_is_read(router):
    r = _call(router, [b"x" * 500] * 4, [(b"content-length", b"2000")])
    assert r["status"] == 413 and r["reads"] == 0 and b"larger than 1000 bytes" in r["body"]


def test_a_streamed_body_is_cut_off_at_the_limit(router):
    r = _call(router, [b"x" * 600] * 10, [])  # no content-length: chunked
    assert r["status"] == 413 and r["reads"] == 2  # stopped at the chunk that crossed 1000 bytes


def test_within_the_limit_a_dead_backend_is_503_and_logged_once(router, caplog):
    caplog.set_level(logging.WARNING, logger="mlops.deploy.local.router")
    for _ in range(5):
        r = _call(router, [b'{"instances": []}'], [(b"content-length", b"17")])
        assert r["status"] == 503 and b"NO_BACKEND" in r["body"]
    lines = [rec for rec in caplog.records if "failed" in rec.getMessage()]
    assert len(lines) == 1 and "stable (v3)" in lines[0].getMessage()


def test_failure_log_reports_what_it_held_back(caplog):
    caplog.set_level(logging.WARNING, logger="mlops.deploy.local.router")
    flog = _FailureLog(interval=10.0)
    route, other = Route("canary", "4", "http://x", 10), Route("stable", "3", "http://y", 90)
    err = ConnectionError("refused")
    assert flog.log(route, err, now=100.0) is True
    assert [flog.log(route, err, now=100.0 + i) for i in range(1, 6)] == [False] * 5
    assert flog.log(other, err, now=101.0) is True  # another backend has its own budget
    assert flog.log(route, err, now=111.0) is True
    assert "5 more failures of it in the last 10 s not logged" in caplog.records[-1].getMessage()
