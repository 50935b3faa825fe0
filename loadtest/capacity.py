"""Idle Socket.IO connections one server process holds, and its memory per connection.

    python -m loadtest.capacity --url http://127.0.0.1:P --pid PID --count 5000 \
        [--seed-file loadtest/results/seed.json [--sockets-per-user 20]]

Opens ``--count`` idle sockets (light client, spread over 127.0.0.x source addresses so
ephemeral ports do not run out), waits for the server's memory to settle, reads the
server's resident set size from /proc before and after, and prints JSON.

With a seed file the sockets authenticate as seeded users, at most ``--sockets-per-user``
each (Pulse refuses a user's sockets past PULSE_SOCKETS_PER_USER, default 20): the server
holds what it would for that many real users, its per-user cap untouched. The seed's
tokens are used first; the other users needed are logged in before the first reading.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

import aiohttp

from loadtest.seed import Rest, bounded
from loadtest.sioclient import SocketIOClient

PER_SOURCE_ADDRESS = 20000
# Pulse refuses a client address's sessions past PULSE_SOCKET_PENDING_PER_ADDRESS (default
# 32) still without their Socket.IO connect: the connects in flight are spread over
# enough source addresses to stay under it.
PENDING_PER_ADDRESS = 32


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


def users_needed(count: int, sockets_per_user: int) -> int:
    return -(-count // sockets_per_user)


async def seeded_tokens(url: str, seed: dict, wanted: int, concurrency: int = 32) -> list[str]:
    """``wanted`` tokens of distinct seeded users: the seed's own, then logins of the others."""
    tokens = list(seed.get("tokens", {}).values())[:wanted]
    have = {int(i) for i in seed.get("tokens", {})}
    others = [i for i in range(len(seed["users"])) if i not in have][:wanted - len(tokens)]
    if len(tokens) + len(others) < wanted:
        raise RuntimeError(f"the seed has {len(seed['users'])} users, {wanted} are needed")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        rest = Rest(session, url)
        tokens += await bounded(concurrency, (rest.call("POST", "/auth/login", ok=(200,), json={
            "login": seed["users"][i]["username"], "password": seed["password"]}) for i in others))
    return [t if isinstance(t, str) else t["token"] for t in tokens]


def source_addresses(count: int, concurrency: int, pending_per_address: int) -> int:
    return max(-(-count // PER_SOURCE_ADDRESS), -(-concurrency // pending_per_address), 1)


async def hold(url: str, pid: int, count: int, tokens: list[str], concurrency: int,
               settle: float, sockets_per_user: int,
               pending_per_address: int = PENDING_PER_ADDRESS) -> dict:
    """``tokens``: one per user, each used by ``sockets_per_user`` sockets (none: anonymous)."""
    limit = raise_open_files_limit()
    before = rss_kib(pid)
    sessions = []
    clients: list[SocketIOClient] = []
    failures = 0
    errors: dict[str, int] = {}
    semaphore = asyncio.Semaphore(concurrency)
    addresses = source_addresses(count, concurrency, pending_per_address)
    per_address = [asyncio.Semaphore(pending_per_address) for _ in range(addresses)]
    started = time.perf_counter()

    async def open_one(i: int):
        nonlocal failures
        source = f"127.0.0.{2 + i % addresses}"
        session = sessions[i % addresses]
        token = tokens[i // sockets_per_user] if tokens else None
        client = SocketIOClient(url, session=session, auth={"token": token} if token else None)
        async with semaphore, per_address[i % addresses]:
            try:
                await client.connect(timeout=30)
                clients.append(client)
            except Exception as exc:  # counted, not fatal: capacity is what we measure
                failures += 1
                key = f"{type(exc).__name__}: {exc}"[:120]
                errors[key] = errors.get(key, 0) + 1
        return source

    for k in range(addresses):
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
    return {"requested": count, "users": len(tokens), "sockets_per_user": sockets_per_user if tokens else None,
            "connected": len(clients), "held_after_settle": still,
            "failed": failures, "errors": dict(sorted(errors.items(), key=lambda e: -e[1])[:3]),
            "connect_seconds": round(connect_seconds, 1), "rss_before_kib": before,
            "rss_after_kib": after, "kib_per_connection": round((after - before) / still, 2) if still else None,
            "source_addresses": addresses, "open_files_limit": limit}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.capacity")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process to measure")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed-file", default=None,
                        help="loadtest.seed's output: sockets authenticate as its users")
    parser.add_argument("--sockets-per-user", type=int, default=20,
                        help="the server's PULSE_SOCKETS_PER_USER (or fewer)")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--pending-per-address", type=int, default=PENDING_PER_ADDRESS,
                        help="the server's PULSE_SOCKET_PENDING_PER_ADDRESS (or fewer)")
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args(argv)
    asyncio.run(measure(args))


async def measure(args) -> None:
    tokens: list[str] = []
    if args.seed_file:
        seed = json.loads(open(args.seed_file).read())
        tokens = await seeded_tokens(args.url, seed, users_needed(args.count, args.sockets_per_user))
    result = await hold(args.url, args.pid, args.count, tokens, args.concurrency, args.settle,
                        args.sockets_per_user, args.pending_per_address)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
