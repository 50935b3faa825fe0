"""Viral scale benchmarks (issue 16). ``likes``: benchmark 2; ``fanout``: benchmark 1
(``loadtest/viral_fanout.py``).

    python -m loadtest.viral fanout                      # fresh stores, 2 instances, own seed
    python -m loadtest.viral fanout --url http://127.0.0.1:8080 --url http://127.0.0.1:8081 \\
        --seed-file loadtest/results/seed.json

    python -m loadtest.viral likes                      # fresh stores and 2 instances
    python -m loadtest.viral likes --url http://127.0.0.1:8080 --url http://127.0.0.1:8081

``likes``: one author's socket listens while ``--likes`` (500) other accounts like one of
their posts within ``--seconds`` (10), alternately through each instance. Goal: the
author gets at most 10 ``notification:new`` for the post's group, the last of them with
the final count, and lists one notification for the post whose ``count`` is 500. Prints
JSON (and writes ``loadtest/results/viral-likes.json``). Against a deployment of your own,
run it with ``PULSE_RATE_LIMITS=off`` (it registers ``--likes`` + 1 accounts).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from loadtest import viral_fanout
from loadtest.sioclient import SocketIOClient

RESULTS = Path(__file__).resolve().parent / "results"
LIKES_JSON = "viral-likes.json"
# The figures make bench puts in its report (the rest is in LIKES_JSON).
SUMMARY = ("likes", "liking_seconds", "pushes", "last_push_count", "final_push_after_last_like_ms",
           "notifications_for_post", "notification_count", "passed")
PUSHES_MAX = 10
# After the last like: how long the final count may take to arrive, then how long to
# keep listening for pushes beyond it (a few coalescing windows).
SETTLE_TIMEOUT_SECONDS = 120.0
LISTEN_AFTER_SECONDS = 3.0


class Rest:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def register(self, base_url: str, prefix: str) -> dict[str, str]:
        """A new account (off the clock; a busy store's 503 is waited out)."""
        suffix = uuid.uuid4().hex[:10]
        payload = {"email": f"{prefix}{suffix}@bench.example", "username": f"{prefix}{suffix}"[:30],
                   "password": "viral benchmark password"}
        for attempt in range(10):
            status, body = await self.call("POST", f"{base_url}/api/v1/auth/register", body=payload)
            if status == 201:
                return {"id": body["user"]["id"], "token": body["token"]}
            if status != 503:
                break
            await asyncio.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"register: {status} {body}")


async def bounded(coros, concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def likes_scenario(urls: list[str], likes: int = 500, seconds: float = 10.0) -> dict[str, Any]:
    """Benchmark 2; returns its figures and verdict."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        rest = Rest(session)
        author = await rest.register(urls[0], "viral")
        t = time.monotonic()
        likers = await bounded([rest.register(urls[i % len(urls)], "fan") for i in range(likes)], 8)
        registered_seconds = time.monotonic() - t
        status, post = await rest.call("POST", f"{urls[0]}/api/v1/posts", author["token"], {"body": "going viral"})
        if status != 201:
            raise RuntimeError(f"post: {status} {post}")
        group_key = f"like:{post['id']}"
        pushes: list[tuple[float, int]] = []
        final = asyncio.Event()

        def on_event(name: str, data: Any) -> None:
            if name != "notification:new" or not isinstance(data, dict):
                return
            notification = data.get("notification") or {}
            if notification.get("group_key") == group_key:
                pushes.append((time.monotonic(), notification["count"]))
                if notification["count"] >= likes:
                    final.set()

        client = SocketIOClient(urls[0], session=session, auth={"token": author["token"]}, on_event=on_event)
        await client.connect()
        try:
            started = time.monotonic()

            async def like(i: int, liker: dict[str, str]) -> int:
                await asyncio.sleep(max(0.0, started + i * seconds / likes - time.monotonic()))
                status, _ = await rest.call("PUT", f"{urls[i % len(urls)]}/api/v1/posts/{post['id']}/like",
                                            liker["token"])
                return status

            statuses = await asyncio.gather(*(like(i, liker) for i, liker in enumerate(likers)))
            liked_seconds = time.monotonic() - started
            last_like = time.monotonic()
            try:
                await asyncio.wait_for(final.wait(), SETTLE_TIMEOUT_SECONDS)
            except asyncio.TimeoutError:
                pass
            final_push_after = (pushes[-1][0] - last_like) if final.is_set() else None
            await asyncio.sleep(LISTEN_AFTER_SECONDS)
        finally:
            await client.close()
        status, listed = await rest.call("GET", f"{urls[0]}/api/v1/notifications?limit=100", author["token"])
        groups = [n for n in listed["items"] if n.get("metadata", {}).get("post_id") == post["id"]
                  and n["type"] == "like"]
    result = {
        "likes": likes,
        "instances": len(urls),
        "likes_ok": sum(s == 200 for s in statuses),
        "liking_seconds": round(liked_seconds, 2),
        "registering_seconds": round(registered_seconds, 1),
        "pushes": len(pushes),
        "push_counts": [count for _, count in pushes],
        "push_gaps_ms": [round((b[0] - a[0]) * 1000) for a, b in zip(pushes, pushes[1:])],
        "last_push_count": pushes[-1][1] if pushes else None,
        "final_push_after_last_like_ms": None if final_push_after is None else round(final_push_after * 1000),
        "notifications_for_post": len(groups),
        "notification_count": groups[0]["count"] if len(groups) == 1 else None,
        "notification_actor_ids": groups[0].get("actor_ids") if len(groups) == 1 else None,
    }
    result["passed"] = (result["likes_ok"] == likes and 0 < result["pushes"] <= PUSHES_MAX
                        and result["last_push_count"] == likes and result["notifications_for_post"] == 1
                        and result["notification_count"] == likes)
    return result


async def _with_fresh_instances(args: argparse.Namespace) -> dict[str, Any]:
    from loadtest.bench import Processes, Stores, start_instances

    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = Processes(logs)
    stores = Stores(uuid.uuid4().hex[:8], processes)
    try:
        await stores.create()
        urls = await start_instances(processes, stores, args.instances)
        return await likes_scenario(list(urls.values()), args.likes, args.seconds)
    finally:
        processes.stop_all()
        await stores.drop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.viral", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["likes", "fanout"])
    parser.add_argument("--url", action="append", default=[],
                        help="a Pulse instance (repeat for several); none: fresh stores and instances")
    parser.add_argument("--instances", type=int, default=2, help="instances started when no --url is given")
    parser.add_argument("--likes", type=int, default=500, help="likes: how many")
    parser.add_argument("--seconds", type=float, default=10.0, help="likes: within how many seconds")
    parser.add_argument("--out", default=None,
                        help=f"default: loadtest/results/{LIKES_JSON} or {viral_fanout.FANOUT_JSON}")
    viral_fanout.add_options(parser)
    args = parser.parse_args(argv)
    if args.scenario == "fanout":
        result = asyncio.run(viral_fanout.run(args))
        out = Path(args.out or RESULTS / viral_fanout.FANOUT_JSON)
    else:
        if args.url:
            result = asyncio.run(likes_scenario([u.rstrip("/") for u in args.url], args.likes, args.seconds))
        else:
            result = asyncio.run(_with_fresh_instances(args))
        out = Path(args.out or RESULTS / LIKES_JSON)
    text = json.dumps(result, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    sys.exit(0 if result["passed"] else 1)

if __name__ == "__main__":
    main()
