"""Idle Socket.IO connections one server process holds, and its memory per connection.

    python -m loadtest.capacity --url http://127.0.0.1:P --pid PID --count 5000 [--token T]

Opens ``--count`` idle sockets (light client, spread over 127.0.0.x source addresses so
ephemeral ports do not run out), waits for the server's memory to settle, reads the
server's resident set size from /proc before and after, and prints JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

import aiohttp

from loadtest.sioclient import SocketIOClient

PER_SOURCE_ADDRESS = 20000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def hold(url: str, pid: int, count: int, token: str | None, concurrency: int,
               settle: float) -> dict:
    limit = raise_open_files_limit()
    before = rss_kib(pid)
    sessions = []
    clients: list[SocketIOClient] = []
    failures = 0
    errors: dict[str, int] = {}
    semaphore = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def open_one(i: int):
        nonlocal failures
        source = f"127.0.0.{2 + i // PER_SOURCE_ADDRESS}"
        session = sessions[i // PER_SOURCE_ADDRESS]
        client = SocketIOClient(url, session=session, auth={"token": token} if token else None)
        async with semaphore:
            try:
                await client.connect(timeout=30)
                clients.append(client)
            except Exception as exc:  # counted, not fatal: capacity is what we measure
                failures += 1
                key = f"{type(exc).__name__}: {exc}"[:120]
                errors[key] = errors.get(key, 0) + 1
        return source

    for k in range((count + PER_SOURCE_ADDRESS - 1) // PER_SOURCE_ADDRESS):
        connector = aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.0.{2 + k}", 0))
        sessions.append(aiohttp.ClientSession(connector=connector))
    try:
        await asyncio.gather(*(open_one(i) for i in range(count)))
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(settle)
        still = sum(1 for c in clients if c.connected)
        after = rss_kib(pid)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for session in sessions:
            await session.close()
    return {"requested": count, "connected": len(clients), "held_after_settle": still,
            "failed": failures, "errors": dict(sorted(errors.items(), key=lambda e: -e[1])[:3]),
            "connect_seconds": round(connect_seconds, 1), "rss_before_kib": before,
            "rss_after_kib": after, "kib_per_connection": round((after - before) / still, 2) if still else None,
            "open_files_limit": limit}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.capacity")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process to measure")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--token", default=None)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args(argv)
    result = asyncio.run(hold(args.url, args.pid, args.count, args.token, args.concurrency,
                              args.settle))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
