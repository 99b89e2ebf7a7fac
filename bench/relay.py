"""Relay benchmark: what the relay between appspaces (sandbox/walls/relay.py) adds to one request.

Baseline: a fresh TCP connection per request to a tiny upstream that answers and closes (as
Daphne does for the relay's `Connection: close`). Relayed: the same request in absolute form
through a `Relay` on a unix socket, in this process's event loop as in the supervisor's, to
that upstream. One connection per request on both sides (the relay takes one request per
connection). p50/p99 and requests/s at concurrency 1 and 8, as ratios relayed/baseline. The
load, the relay and the upstream share this process's one event loop, so the throughput
figures are a lower bound of the relay's (the supervisor's loop would carry only the relay). The
whole A -> B path also crosses the gateway and two sandboxes: see bench/gateway.py for those.
Run: `python -m bench relay` (no root needed).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from sandbox.spec import SandboxSpec
from sandbox.walls.relay import Relay

SECONDS = float(os.environ.get("BENCH_RELAY_SECONDS", "2"))
HOST = "b.example.test"


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
        await writer.drain()
    finally:
        writer.close()


async def _one(open_conn, request: bytes) -> float:
    t0 = time.perf_counter()
    reader, writer = await open_conn()
    writer.write(request)
    body = await reader.read()
    writer.close()
    assert body.endswith(b"hello"), body[:200]
    return time.perf_counter() - t0


async def _load(open_conn, request: bytes, concurrency: int) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + SECONDS

    async def client() -> None:
        while time.perf_counter() < deadline:
            samples.append(await _one(open_conn, request))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples


def _summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    return p50, p99, len(samples) / SECONDS


async def _run() -> None:
    server = await asyncio.start_server(_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    spec = SandboxSpec(
        id="bench",
        uid=os.getuid(),
        app_dir="/",
        cache_dir="/",
        relay_hosts=(HOST,),
        relay_upstream=f"127.0.0.1:{port}",
        relay_public_port=8000,
    )
    relay = Relay(spec, work / "relay.sock", os.getuid())
    await relay.start(owner=None)
    direct = b"GET /x HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    relayed = f"GET http://{HOST}:8000/x HTTP/1.1\r\nX-App: 1\r\n\r\n".encode()
    try:
        for concurrency in (1, 8):
            base = _summary(
                await _load(lambda: asyncio.open_connection("127.0.0.1", port), direct, concurrency)
            )
            via = _summary(
                await _load(
                    lambda: asyncio.open_unix_connection(str(work / "relay.sock")),
                    relayed,
                    concurrency,
                )
            )
            print(
                f"concurrency {concurrency}: direct p50 {base[0]:.3f} ms p99 {base[1]:.3f} ms "
                f"{base[2]:.0f} req/s | relayed p50 {via[0]:.3f} ms p99 {via[1]:.3f} ms "
                f"{via[2]:.0f} req/s | ratio p50 x{via[0] / base[0]:.2f}, "
                f"throughput x{via[2] / base[2]:.2f}",
                flush=True,
            )
    finally:
        relay.close()
        server.close()
        (work / "relay.sock").unlink(missing_ok=True)
        work.rmdir()


def run(options) -> None:
    asyncio.run(_run())
