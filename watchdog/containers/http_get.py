"""One HTTP GET (or the canary's POST) on a fresh connection: the probes' transport, cheap enough to probe every second.

I/O. A probe is one small GET to a server on the same host or network; what it must cost is
about what the socket calls cost. httpx's pooled client costs several times that per request
(its pool, its anyio layers: bench/probe_transport.py measures both), which made a 1 s probe
interval over 64 endpoints cost several points of a core. So the probes speak HTTP/1.1 here,
on asyncio's streams, with h11 (the HTTP/1.1 state machine httpx itself is built on) doing the
parsing: no hand-written HTTP parser, no connection pool. Each probe opens its own connection
and asks the server to close it (`Connection: close`): no stale keep-alive connection to retry
(cpp-httplib closes idle ones after 5 s), and a server that accepts but never answers costs
exactly that probe its deadline, nothing else.

Errors, all raised to the caller, who turns each into a probe result:
    TimeoutError          the deadline passed (connect, send or answer)
    ConnectionRefusedError, OSError   the connection failed or broke
    ssl.SSLError          TLS failed (https endpoints; verified with the system's CA store)
    BadAnswer             the server's bytes are not HTTP, the body is too large, or it
                          closed the connection before a whole answer
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import h11

USER_AGENT = "gpu-watchdog"
READ_CHUNK = 65536
HEALTH_BODY_LIMIT = 1 << 16  # a /health answer is a few bytes; more than 64 KiB is not one
METRICS_BODY_LIMIT = 1 << 24  # vLLM's /metrics with many models and histograms stays well below 16 MiB


class BadAnswer(Exception):
    """The server answered, but not with a whole, well-formed HTTP response within the limits."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass(frozen=True)
class Origin:
    """Where a URL's request goes: parsed once per URL (the probes ask the same URLs all day)."""

    tls: bool
    host: str
    port: int
    host_header: str
    target: str


@lru_cache(maxsize=4096)
def origin_of(url: str) -> Origin:
    """Raises ValueError for a URL that is not http(s)://host[:port]/path (the labels are checked before)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(tls, host, port, host_header, target)


def _request(parser: h11.Connection, origin: Origin, body: bytes | None = None) -> bytes:
    headers = [("Host", origin.host_header), ("User-Agent", USER_AGENT), ("Connection", "close")]
    if body is not None:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    method = "GET" if body is None else "POST"
    head = parser.send(h11.Request(method=method, target=origin.target, headers=headers)) or b""
    data = (parser.send(h11.Data(data=body)) or b"") if body else b""
    return head + data + (parser.send(h11.EndOfMessage()) or b"")


async def get(
    url: str, timeout: float, *, body_limit: int = HEALTH_BODY_LIMIT, tls: ssl.SSLContext | None = None
) -> Answer:
    """GET `url` on a new connection, the whole exchange within `timeout` seconds."""
    return await exchange(url, timeout, None, body_limit=body_limit, tls=tls)


async def post_json(url: str, body: bytes, timeout: float, *, body_limit: int = HEALTH_BODY_LIMIT) -> Answer:
    """POST a JSON `body` to `url` on a new connection (the canary's 1-token completion), within `timeout`."""
    return await exchange(url, timeout, body, body_limit=body_limit)


async def exchange(
    url: str, timeout: float, body: bytes | None, *, body_limit: int, tls: ssl.SSLContext | None = None
) -> Answer:
    """One request (GET, or POST with `body`) and its whole answer on a new connection, within `timeout`."""
    origin = origin_of(url)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            origin.host,
            origin.port,
            ssl=(tls or default_tls()) if origin.tls else None,
            server_hostname=origin.host if origin.tls else None,
        )
        try:
            parser = h11.Connection(h11.CLIENT)
            writer.write(_request(parser, origin, body))
            return await _read_answer(reader, parser, body_limit)
        finally:
            writer.close()
            with contextlib.suppress(Exception):  # closing never fails a probe that has its answer
                await asyncio.shield(writer.wait_closed())


async def _read_answer(reader: asyncio.StreamReader, parser: h11.Connection, body_limit: int) -> Answer:
    status: int | None = None
    body = bytearray()
    closed = False
    try:
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_CHUNK)
                closed = not data
                parser.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > body_limit:
                    raise BadAnswer(f"answer larger than {body_limit} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status or 0, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise BadAnswer("connection closed before a whole answer")
    except h11.RemoteProtocolError as exc:
        if closed:
            raise BadAnswer("connection closed before a whole answer") from None
        raise BadAnswer(f"not an HTTP answer ({exc})") from None


@lru_cache(maxsize=1)
def default_tls() -> ssl.SSLContext:
    """Built once: creating a context loads the CA store, far more work than a probe."""
    return ssl.create_default_context()
