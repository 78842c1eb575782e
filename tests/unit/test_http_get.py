"""The probes' transport against real sockets on 127.0.0.1: each answer a server can give, each way it can fail."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from watchdog.containers.http_get import BadAnswer, get, origin_of
from watchdog.containers.http_probe import probe_once
from watchdog.model import ProbeStatus

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(serve: Serve, *, read_request: bool = True) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A raw TCP server on an ephemeral loopback port; yields the port and the requests it read."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if read_request:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await serve(reader, writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        srv.close()


def answer(raw: bytes) -> Serve:
    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return serve


def test_a_plain_answer_and_the_request_sent() -> None:
    async def go() -> None:
        raw = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'
        async with server(answer(raw)) as (port, seen):
            got = await get(f"http://127.0.0.1:{port}/health?x=1", 3)
        assert (got.status, got.body) == (200, b'{"status":"ok"}')
        request = seen[0].decode()
        assert request.startswith("GET /health?x=1 HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{port}" in request.lower()
        assert "connection: close" in request.lower()

    asyncio.run(go())


def test_chunked_and_close_delimited_bodies_are_read_whole() -> None:
    async def go() -> None:
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        async with server(answer(chunked)) as (port, _):
            assert (await get(f"http://127.0.0.1:{port}/metrics", 3)).body == b"hello world"
        until_close = b"HTTP/1.1 200 OK\r\n\r\nno length, ends at close"  # HTTP/1.0 style
        async with server(answer(until_close)) as (port, _):
            assert (await get(f"http://127.0.0.1:{port}/", 3)).body == b"no length, ends at close"

    asyncio.run(go())


def test_a_server_that_accepts_and_never_answers_costs_its_deadline() -> None:
    async def hang(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def go() -> None:
        async with server(hang) as (port, _):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await get(f"http://127.0.0.1:{port}/health", 0.3)
            assert 0.25 < time.monotonic() - started < 2.0

    asyncio.run(go())


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed before a whole answer"),
        (b"", "closed before a whole answer"),
    ],
)
def test_what_is_not_a_whole_http_answer_is_a_bad_answer(raw: bytes, why: str) -> None:
    async def go() -> None:
        async with server(answer(raw)) as (port, _):
            with pytest.raises(BadAnswer, match=why):
                await get(f"http://127.0.0.1:{port}/health", 3)

    asyncio.run(go())


def test_a_body_over_the_limit_is_refused() -> None:
    async def go() -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
        async with server(answer(raw)) as (port, _):
            with pytest.raises(BadAnswer, match="larger than 1000 bytes"):
                await get(f"http://127.0.0.1:{port}/", 3, body_limit=1000)
            assert len((await get(f"http://127.0.0.1:{port}/", 3, body_limit=5000)).body) == 5000

    asyncio.run(go())


def test_origins_default_ports_and_ipv6_hosts() -> None:
    assert origin_of("http://h/").port == 80 and origin_of("http://h/").host_header == "h"
    assert origin_of("https://h/x").port == 443 and origin_of("https://h/x").tls
    assert origin_of("http://h:8080").target == "/" and origin_of("http://h:8080").host_header == "h:8080"
    six = origin_of("http://[::1]:9000/health")
    assert (six.host, six.port, six.host_header) == ("::1", 9000, "[::1]:9000")
    with pytest.raises(ValueError, match="not an http"):
        origin_of("ftp://h/")


def test_probe_results_name_what_happened() -> None:
    async def hang(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def go() -> None:
        clock = time.time
        async with server(answer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")) as (port, _):
            loading = await probe_once(f"http://127.0.0.1:{port}/health", 3, clock)
        async with server(answer(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")) as (port, _):
            failed = await probe_once(f"http://127.0.0.1:{port}/health", 3, clock)
        async with server(hang) as (port, _):
            timed_out = await probe_once(f"http://127.0.0.1:{port}/health", 0.2, clock)
        async with server(answer(b"garbage\r\n\r\n")) as (port, _):
            garbled = await probe_once(f"http://127.0.0.1:{port}/health", 3, clock)
        refused = await probe_once(f"http://127.0.0.1:{port}/health", 3, clock)  # that server is gone now
        assert (loading.status, loading.detail) == (ProbeStatus.LOADING, "HTTP 503 (loading)")
        assert (failed.status, failed.detail) == (ProbeStatus.FAILED, "HTTP 500")
        assert (timed_out.status, timed_out.detail) == (ProbeStatus.FAILED, "timeout after 0.2 s")
        assert 0.15 < timed_out.duration < 2.0
        assert garbled.status == ProbeStatus.FAILED and garbled.detail.startswith("bad answer after ")
        assert (refused.status, refused.detail) == (ProbeStatus.FAILED, "connection refused")

    asyncio.run(go())


def test_tls_is_verified() -> None:
    """An https endpoint whose certificate the system does not trust fails the probe, naming TLS."""

    async def not_tls(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # plain HTTP where TLS was expected
        await writer.drain()

    async def go() -> None:
        async with server(not_tls, read_request=False) as (port, _):
            with pytest.raises(ssl.SSLError):
                await get(f"https://127.0.0.1:{port}/health", 3)

    asyncio.run(go())
