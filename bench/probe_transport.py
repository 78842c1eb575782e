"""CPU per health probe, by transport: the probes' own GET (h11 on asyncio streams) against httpx.

Starts one stand-in server container (127.0.0.1, a published port) and sends it `--requests`
GETs of /health one after another with each transport, in this process, and reports this
process's CPU time per GET (user + system; the server's CPU is not counted):
  - plain sockets (blocking, a fresh connection each, by hand: the floor, for scale);
  - watchdog.containers.http_get.get (a fresh connection each, h11 parsing): what the probes use;
  - httpx.AsyncClient with a keep-alive pool per server: what the probes used before.
Rounds alternate the transports (`--rounds`), and the medians are quoted: timings are noisy on
shared machines.
Usage: python bench/probe_transport.py [--requests 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
from collections.abc import Callable

import httpx
from common import new_fleet, save

from tests.integration.harness import free_port
from watchdog.containers.http_get import get


def plain_sockets(port: int, n: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"), data[:40]


def probe_get(port: int, n: int) -> None:
    async def run() -> None:
        for _ in range(n):
            answer = await get(f"http://127.0.0.1:{port}/health", 3)
            assert answer.status == 200

    asyncio.run(run())


def httpx_pool(port: int, n: int) -> None:
    async def run() -> None:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=2)
        async with httpx.AsyncClient(trust_env=False, limits=limits) as client:
            for _ in range(n):
                response = await client.get(f"http://127.0.0.1:{port}/health", timeout=3)
                assert response.status_code == 200

    asyncio.run(run())


def cpu_per_call(run: Callable[[int, int], None], port: int, n: int) -> float:
    started = time.process_time()
    run(port, n)
    return (time.process_time() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    transports: dict[str, Callable[[int, int], None]] = {
        "plain_sockets": plain_sockets,
        "probe_get": probe_get,
        "httpx_pool": httpx_pool,
    }
    fleet = new_fleet()
    try:
        port = free_port()
        fleet.start("probe", host_port=port)
        fleet.wait_ready("probe", timeout=60)
        samples: dict[str, list[float]] = {name: [] for name in transports}
        for _ in range(args.rounds):
            for name, run in transports.items():
                samples[name].append(cpu_per_call(run, port, args.requests))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        for name, value in medians.items():
            ratio = value / medians["probe_get"]
            print(f"{name:14s} {value * 1e6:7.0f} us CPU per GET (median of {args.rounds}), {ratio:.2f}x probe_get")
        print(
            "saved",
            save(
                "probe_transport",
                {
                    "requests_per_round": args.requests,
                    "rounds": args.rounds,
                    "cpu_seconds_per_get_median": medians,
                    "cpu_seconds_per_get": samples,
                },
            ),
        )
    finally:
        fleet.remove_all()


if __name__ == "__main__":
    main()
