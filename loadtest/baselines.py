"""Ceilings of our own stack on this machine, measured in the same run as the bench.

    python -m loadtest.baselines http-server --port P
    python -m loadtest.baselines http-client --url http://127.0.0.1:P/json --seconds 8
    python -m loadtest.baselines sio-server --port P --redis-url redis://127.0.0.1:6379/0 --channel C
    python -m loadtest.baselines sio-client --urls http://..,http://.. --rates 1000,2000 --seconds 5

- A bare aiohttp JSON endpoint (what REST could do with no work at all); measured with
  wrk when installed, else with the asyncio client here (which then is the bottleneck:
  the report says which one ran).
- Bare python-socketio + AsyncRedisManager broadcasting to rooms across two processes:
  the stock chat path, with no persistence. Clients (the light client of this package)
  sit in rooms on both servers; senders emit a timestamped ``say`` that the server
  broadcasts to the room; every receipt is a delivery latency sample.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Awaitable, Callable

import aiohttp


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_ms: list[float], seconds: float) -> dict:
    return {"count": len(samples_ms), "per_second": round(len(samples_ms) / seconds, 1),
            "avg_ms": round(statistics.fmean(samples_ms), 2) if samples_ms else None,
            "p50_ms": round(percentile(samples_ms, 50), 2),
            "p95_ms": round(percentile(samples_ms, 95), 2),
            "p99_ms": round(percentile(samples_ms, 99), 2)}


# --- bare aiohttp ---------------------------------------------------------------------

def run_http_server(port: int) -> None:
    from aiohttp import web

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    body = json.dumps({"id": "1", "username": "bare", "display_name": "Bare JSON"}).encode()

    async def handler(_request):
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/json", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def http_client(url: str, seconds: float, concurrency: int) -> dict:
    samples: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(session):
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            samples.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    result = summary(samples, seconds)
    result.update(tool="python aiohttp client", errors=errors, concurrency=concurrency)
    return result


def wrk_measure(url: str, seconds: float, connections: int) -> dict | None:
    """wrk's figures, or None when wrk is not installed."""
    if not shutil.which("wrk"):
        return None
    output = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
                             url], capture_output=True, text=True, timeout=seconds + 30).stdout

    def ms(label: str) -> float | None:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    avg = re.search(r"Latency\s+([\d.]+)(us|ms|s)", output)
    avg_ms = None
    if avg:
        avg_ms = float(avg.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[avg.group(2)]
    return {"tool": "wrk", "connections": connections,
            "per_second": float(rps.group(1)) if rps else None,
            "avg_ms": round(avg_ms, 3) if avg_ms is not None else None,
            "p50_ms": ms("50%"), "p99_ms": ms("99%")}


# --- bare python-socketio + AsyncRedisManager -----------------------------------------

def run_sio_server(port: int, redis_url: str, channel: str) -> None:
    import socketio
    from aiohttp import web

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)

    @sio.on("join")
    async def join(sid, room):
        await sio.enter_room(sid, room)
        return {"ok": True}

    @sio.on("say")
    async def say(sid, data):
        await sio.emit("said", data, room=data["room"])
        return {"ok": True}

    app = web.Application()
    sio.attach(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def offered_steps(send: Callable[[int], Awaitable[None]], samples: list[float], *, rooms: int,
                        per_room: int, rates: list[float], seconds: float, max_p99_ms: float) -> dict:
    """Offers each delivery rate in turn for ``seconds``: ``send(n)`` makes the n-th send,
    to room n % rooms, which reaches ``per_room`` sockets (the sender's too, as in Pulse's
    chat); ``samples`` collects delivery latencies (ms). Per step the achieved rate and the
    latency; climbing stops once the stack cannot keep up."""
    steps = []
    for rate in rates:
        sends_per_second = rate / per_room
        samples.clear()
        started = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * sends_per_second) - sent
            for _ in range(max(due, 0)):
                await send(sent)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.sleep(1.0)  # let in-flight deliveries land
        step = summary(samples, seconds)
        step["offered_per_second"] = rate
        steps.append(step)
        if step["per_second"] < 0.8 * rate or step["p99_ms"] > 10 * max_p99_ms:
            break
    # Sustained: keeps up with the offered rate, with deliveries still prompt.
    sustained = [s for s in steps if s["per_second"] >= 0.95 * s["offered_per_second"]
                 and s["p99_ms"] <= max_p99_ms]
    return {"steps": steps, "rooms": rooms, "per_room": per_room,
            "sustained_means": f">= 95% of offered and p99 <= {max_p99_ms:g} ms",
            "max_sustained_per_second": max((s["per_second"] for s in sustained), default=0)}


async def sio_client(urls: list[str], rooms: int, per_room: int, rates: list[float],
                     seconds: float, max_p99_ms: float = 100.0) -> dict:
    """Bare python-socketio: offered delivery rates in steps (see ``offered_steps``)."""
    from loadtest.sioclient import SocketIOClient

    samples: list[float] = []

    def on_event(name, data):
        if name == "said":
            samples.append((time.time() - data["t"]) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = [SocketIOClient(urls[i % len(urls)], session=session, on_event=on_event)
                   for i in range(rooms * per_room)]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(c.call("join", f"room{i // per_room}")
                               for i, c in enumerate(clients)))
        senders = [clients[r * per_room] for r in range(rooms)]

        async def send(n: int) -> None:
            await senders[n % rooms].emit("say", {"room": f"room{n % rooms}", "t": time.time()})

        result = await offered_steps(send, samples, rooms=rooms, per_room=per_room, rates=rates,
                                     seconds=seconds, max_p99_ms=max_p99_ms)
        await asyncio.gather(*(c.close() for c in clients))
    return {**result, "instances": len(urls)}


async def pulse_chat_client(urls: list[str], accounts: list[dict], rooms: int, per_room: int,
                            rates: list[float], seconds: float, max_p99_ms: float = 100.0) -> dict:
    """The same steps against Pulse's whole chat path: ``message:send`` over Socket.IO, the
    message stored in MongoDB, fanned out across the instances (members alternate between
    them), received as ``message:new``. ``accounts``: [{"token", "user_id"}], rooms × per_room
    of them; each room is a group conversation created here."""
    from loadtest.realtime_session import chat_body, parse_chat_body
    from loadtest.sioclient import SocketIOClient

    samples: list[float] = []

    def on_event(name, data):
        if name == "message:new":
            parsed = parse_chat_body(data["message"]["body"])
            if parsed is not None:
                samples.append((time.time() - parsed[0]) * 1000)

    members = [accounts[r * per_room:(r + 1) * per_room] for r in range(rooms)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conversation_ids = []
        for group in members:
            async with session.post(f"{urls[0]}/api/v1/conversations", json={
                    "title": "fan-out baseline",
                    "member_ids": [a["user_id"] for a in group[1:]]},
                    headers={"Authorization": f"Bearer {group[0]['token']}"}) as response:
                if response.status != 201:
                    raise RuntimeError(f"creating a conversation: {response.status} {await response.text()}")
                conversation_ids.append((await response.json())["id"])
        clients = [SocketIOClient(urls[i % len(urls)], session=session, on_event=on_event,
                                  auth={"token": account["token"]})
                   for i, account in enumerate(a for group in members for a in group)]
        await asyncio.gather(*(c.connect() for c in clients))
        senders = [clients[r * per_room] for r in range(rooms)]

        async def send(n: int) -> None:
            await senders[n % rooms].emit("message:send", {
                "conversation_id": conversation_ids[n % rooms], "body": chat_body(n % rooms),
                "client_id": f"fanout-{n}-{time.time_ns()}"})

        result = await offered_steps(send, samples, rooms=rooms, per_room=per_room, rates=rates,
                                     seconds=seconds, max_p99_ms=max_p99_ms)
        await asyncio.gather(*(c.close() for c in clients))
    return {**result, "instances": len(urls), "conversation_ids": conversation_ids}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("http-server")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("http-client")
    p.add_argument("--url", required=True)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--no-wrk", action="store_true")
    p = sub.add_parser("sio-server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--channel", required=True)
    p = sub.add_parser("sio-client")
    p.add_argument("--urls", required=True)
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--per-room", type=int, default=4)
    p.add_argument("--rates", default="1000,2000,4000")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--max-p99-ms", type=float, default=100.0)
    p = sub.add_parser("pulse-chat-client")
    p.add_argument("--urls", required=True)
    p.add_argument("--accounts", required=True, help='JSON file: [{"token", "user_id"}, ...]')
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--per-room", type=int, default=4)
    p.add_argument("--rates", default="1000,2000,4000")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--max-p99-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    if args.command == "http-server":
        run_http_server(args.port)
    elif args.command == "sio-server":
        run_sio_server(args.port, args.redis_url, args.channel)
    elif args.command == "http-client":
        result = None if args.no_wrk else wrk_measure(args.url, args.seconds, args.concurrency)
        if result is None:
            result = asyncio.run(http_client(args.url, args.seconds, args.concurrency))
        json.dump(result, sys.stdout)
    elif args.command == "sio-client":
        result = asyncio.run(sio_client(args.urls.split(","), args.rooms, args.per_room,
                                        [float(r) for r in args.rates.split(",")], args.seconds,
                                        args.max_p99_ms))
        json.dump(result, sys.stdout)
    elif args.command == "pulse-chat-client":
        with open(args.accounts) as handle:
            accounts = json.load(handle)
        result = asyncio.run(pulse_chat_client(args.urls.split(","), accounts, args.rooms, args.per_room,
                                               [float(r) for r in args.rates.split(",")], args.seconds,
                                               args.max_p99_ms))
        json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
