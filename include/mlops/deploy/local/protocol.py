"""The router's HTTP/1.1 protocol: uvicorn's httptools protocol with a header-read timeout and size cap.

uvicorn bounds idle keep-alive connections but not a client that sends its request line and headers
slowly ("slowloris": a byte every few seconds holds a connection open forever), nor, with httptools,
the size of a request head that keeps coming. :class:`GuardedHttpToolsProtocol` adds both:

* the request line and headers must arrive within ``header_timeout_s`` of the connection opening (or
  of the previous response on a keep-alive connection); else ``408 Request Timeout`` (silence if
  nothing was sent) and the connection is closed;
* more than ``max_head_bytes`` received without a complete head: ``431`` and the connection is
  closed. A complete head that is too large, which httptools may parse in one go, is refused by the
  router itself (:mod:`mlops.deploy.local.router`), with the same status.

Built on uvicorn's ``HttpToolsProtocol`` of the locked uvicorn version (``tests/unit/test_router.py``
drives it over real sockets). Pipelined requests are not guarded beyond the first head of each
response cycle.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a client has to send a whole request line and headers.
HEADER_TIMEOUT_S = 10.0
#: Request line and headers together, in bytes.
MAX_HEAD_BYTES = 16 << 10


def _status(code: int, reason: bytes, message: bytes) -> bytes:
    body = b'{"error_code":"%s","message":"%s"}' % (reason.upper().replace(b" ", b"_"), message)
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        % (code, reason, len(body), body)
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on each request head."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: its first request head is due within the deadline."""
        self._heads = 0  # request heads completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        """A new request head is due: count its bytes, start its deadline."""
        self._disarm()
        self._armed_heads, self._head_bytes = self._heads, 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_deadline)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _waiting_for_head(self) -> bool:
        return self._heads == self._armed_heads and not self.transport.is_closing()

    def _refuse(self, raw: bytes) -> None:
        self._disarm()
        if raw:
            self.transport.write(raw)
        self.transport.close()

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            sent = self._head_bytes > 0  # an idle keep-alive connection just closes
            raw = _status(
                408, b"Request Timeout", b"request headers not received within %ds" % self.header_timeout_s
            )
            self._refuse(raw if sent else b"")

    def data_received(self, data: bytes) -> None:
        """Count the bytes of a head still due; refuse a head that outgrows the cap before it ends."""
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._head_timer is not None
            and self._waiting_for_head()
            and self._head_bytes > self.max_head_bytes
        ):
            msg = b"request line and headers larger than %d bytes" % self.max_head_bytes
            self._refuse(_status(431, b"Request Header Fields Too Large", msg))

    def on_headers_complete(self) -> None:
        """The head arrived in time: the deadline is off until the response is complete."""
        self._heads += 1
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """The response is out: the next request head on this connection is due."""
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm()  # the next request's head (uvicorn's keep-alive timeout closes an idle one first)

    def connection_lost(self, exc: Exception | None) -> None:
        """No timer outlives its connection."""
        self._disarm()
        super().connection_lost(exc)
