"""The local endpoint's router: body limits and failure logging at the ASGI level against a real dead port;
header deadlines and head size over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from mlops.deploy.local.protocol import GuardedHttpToolsProtocol
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


class _FastDeadline(GuardedHttpToolsProtocol):
    header_timeout_s = 1.0


@pytest.fixture
def served_router(router):
    """The router on a real socket with the guarded protocol (a 1 s header deadline for the test)."""
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        router, host="127.0.0.1", port=port, http=_FastDeadline, log_level="error", timeout_keep_alive=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the router did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _exchange(port: int, parts: list[bytes], pause: float = 0.0, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``parts`` (``pause`` s apart), then read until the server closes; (answer, seconds to close)."""
    import time

    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(wait)
        t0 = time.monotonic()
        for part in parts:
            conn.sendall(part)
            time.sleep(pause)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer, time.monotonic() - t0


HEALTH = b"GET /router/health HTTP/1.1\r\nHost: r\r\n\r\n"


def test_a_head_sent_too_slowly_gets_408_and_is_closed(served_router):
    answer, took = _exchange(served_router, [b"GET /router/health HTTP/1.1\r\n", b"Host: r\r\n"], pause=0.3)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"not received within 1s" in answer, answer
    assert 0.9 < took < 3.0
    silent, took = _exchange(served_router, [])  # connected, never sent a byte: closed without an answer
    assert silent == b"" and took < 3.0


def test_the_deadline_applies_to_each_request_of_a_keep_alive_connection(served_router):
    answer, took = _exchange(served_router, [HEALTH, b"GET /router/health HTTP/1.1\r\n"], pause=0.2)
    first, _, rest = answer.partition(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200 ") and rest.startswith(b"HTTP/1.1 408 "), answer
    assert took < 3.0


def test_a_head_that_never_ends_gets_431(served_router):
    endless = [b"GET /router/health HTTP/1.1\r\nHost: r\r\n"] + [
        b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(17)
    ]  # just over 16 KiB, in pieces the server reads one by one (a head that keeps coming)
    answer, _ = _exchange(served_router, endless, pause=0.02)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"larger than 16384 bytes" in answer, answer[:200]


def test_a_complete_oversized_head_gets_431_and_a_normal_one_passes(served_router):
    big = (
        b"GET /router/health HTTP/1.1\r\nHost: r\r\nX-Big: " + b"a" * 20000 + b"\r\nConnection: close\r\n\r\n"
    )
    answer, _ = _exchange(served_router, [big])
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    ok, _ = _exchange(served_router, [HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")])
    assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b'{"status":"ok"}')
