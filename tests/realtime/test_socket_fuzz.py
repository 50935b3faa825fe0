"""A socket fuzzer: seeded random hostile Engine.IO / Socket.IO frames, over websocket and
long-polling, on authenticated and unauthenticated sessions, against a `pulse serve`
process. The server must stay up, answer or close every socket (a probe after the
hostile frames gets its answer, or the connection is closed), keep its memory bounded
and log no error or traceback.

A few thousand frames by default; ``PULSE_FUZZ_FRAMES=50000`` (and ``PULSE_FUZZ_SEED``)
for a longer or different run.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import string
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

FRAMES = int(os.environ.get("PULSE_FUZZ_FRAMES", "2000"))
SEED = int(os.environ.get("PULSE_FUZZ_SEED", "20261201"))
CONCURRENCY = 16
MAX_PAYLOAD = 32 * 1024
EIO = "/socket.io/?EIO=4"
# RSS growth allowed between the warm-up and the end of the run (allocator arenas,
# caches reaching their steady size); a leak per socket or frame goes far beyond it.
RSS_GROWTH_BYTES = 64 * 1024 * 1024

TEXT = string.printable + "é中€\u0000\u2028\U0001F600\"\\{}[],:/-"
EVENTS = ("message:send", "message:read", "typing", "presence:query", "connect", "disconnect", "x" * 300, "")


def junk(rng: random.Random, n: int | None = None) -> str:
    return "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 40) if n is None else n))


def json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 1e308, rng.randint(-10**6, 10**6)])
    if kind in (3, 4):
        return junk(rng)
    if kind in (5, 6):
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {junk(rng, rng.randint(0, 8)): json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def payload(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return ""
    if kind == 1:
        return json.dumps(json_value(rng))[: rng.randint(0, 30)]  # truncated
    if kind == 2:
        return "[" * rng.randint(100, 3000)  # deep nesting
    if kind == 3:
        return json.dumps([rng.choice(EVENTS), json_value(rng)])
    if kind == 4:
        return json.dumps([rng.choice(EVENTS), {"_placeholder": True, "num": rng.randint(0, 10**9)}])
    if kind == 5:
        return '{"_placeholder":true,"num":0}'
    return json.dumps(json_value(rng))


def hostile_frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 64))
    if kind == 1:
        return junk(rng)
    if kind == 2:
        return rng.choice("0123456789b") + junk(rng)
    if kind == 3:
        return rng.choice(["1", "2", "2probe", "3", "3probe", "5", "6", "", "4", "40", "41", "4/"])
    if kind == 4:
        return "4" + "x" * rng.randint(MAX_PAYLOAD - 10, MAX_PAYLOAD + 100)  # around maxPayload
    if kind == 5:  # binary packets with absurd attachment counts
        return f"4{rng.choice('56')}{rng.choice(['1', '9' * 10, '0', '-1', ''])}-{payload(rng)}"
    # Socket.IO packets: type, namespace, ack id and payload each valid or not.
    sio_type = rng.choice("0123" * 3 + "456789a")
    namespace = rng.choice(["", "", "/", "/custom,", "/" + junk(rng, 10) + ",", "/" + "n" * 400 + ","])
    ack_id = rng.choice(["", "", "1", "42", str(rng.randint(0, 10**18)), "9" * 40, "-1", "abc"])
    return "4" + sio_type + namespace + ack_id + payload(rng)


class Outcome:
    answered = 0
    closed = 0


async def ws_case(http: aiohttp.ClientSession, url: str, token: str | None, frames: list, outcome: Outcome) -> None:
    ws = await http.ws_connect(f"{url}{EIO}&transport=websocket", max_msg_size=0)
    try:
        opened = await ws.receive(timeout=15)
        assert opened.type is aiohttp.WSMsgType.TEXT and opened.data.startswith("0"), opened
        if token is not None:
            await ws.send_str("40" + json.dumps({"token": token}))
            answer = await ws.receive(timeout=15)
            assert answer.type is aiohttp.WSMsgType.TEXT and answer.data.startswith("40{"), answer
        for frame in frames:
            if ws.closed:
                break
            try:
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            except ConnectionError:
                break  # closed by the server meanwhile
        probe, expected = (('42999["presence:query",{"user_ids":[]}]', "43999[")
                           if token is not None else ("40/probe,", '44/probe,{"message":"Invalid namespace"}'))
        if not ws.closed:
            try:
                await ws.send_str(probe)
            except ConnectionError:
                pass
        async with asyncio.timeout(20):  # answered or closed, in bounded time
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    outcome.closed += 1
                    return
                if msg.data == "2":
                    await ws.send_str("3")
                elif msg.data.startswith(expected):
                    outcome.answered += 1
                    return
    finally:
        await ws.close()


async def polling_case(http: aiohttp.ClientSession, url: str, token: str | None, frames: list,
                       outcome: Outcome) -> None:
    async with http.get(f"{url}{EIO}&transport=polling") as resp:
        assert resp.status == 200
        sid = json.loads((await resp.text())[1:])["sid"]
    session_url = f"{url}{EIO}&transport=polling&sid={sid}"

    async def post(body: str | bytes) -> int:
        async with http.post(session_url, data=body) as resp:
            await resp.read()
            return resp.status

    if token is not None:
        assert await post("40" + json.dumps({"token": token})) == 200
    texts = [f for f in frames if isinstance(f, str)]
    binary = [f for f in frames if isinstance(f, bytes)]
    bodies: list[str | bytes] = ["\x1e".join(texts)] if texts else []
    bodies += binary
    probe, expected = (('42999["presence:query",{"user_ids":[]}]', "43999[")
                       if token is not None else ("40/probe,", '44/probe,{"message":"Invalid namespace"}'))
    async with asyncio.timeout(30):
        for body in [*bodies, probe]:
            if await post(body) == 400:
                outcome.closed += 1
                return
        while True:
            async with http.get(session_url) as resp:
                status, text = resp.status, await resp.text()
            if status == 400:
                outcome.closed += 1
                return
            packets = text.split("\x1e")
            if any(p.startswith(expected) for p in packets):
                outcome.answered += 1
                return
            if "2" in packets and await post("3") == 400:
                outcome.closed += 1
                return


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) * 1024 if found else None


async def gauge(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_hostile_frames_leave_the_server_up_bounded_and_quiet(api, serve_process):
    proc = serve_process(socket_max_payload_bytes=MAX_PAYLOAD, socket_pending_per_address=100_000,
                         socket_ping_interval_ms=5000, socket_ping_timeout_ms=5000,
                         socket_connect_timeout_ms=5000, log_level="INFO", rate_limits=False)
    account = await api.register("fuzz")
    rng = random.Random(SEED)
    cases = []
    sent = 0
    while sent < FRAMES:
        frames = [hostile_frame(rng) for _ in range(rng.randint(1, 8))]
        sent += len(frames)
        cases.append((rng.choice([ws_case, polling_case]), rng.random() < 0.5, frames))
    outcome = Outcome()
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as http:
        async def run(case) -> None:
            kind, authenticated, frames = case
            async with limit:
                await kind(http, proc.url, account.token if authenticated else None, frames, outcome)

        warm_up = len(cases) // 4
        await asyncio.gather(*(run(c) for c in cases[:warm_up]))
        rss_before = rss_bytes(proc.proc.pid)
        await asyncio.gather(*(run(c) for c in cases[warm_up:]))

        async def sockets_released() -> bool:
            return await gauge(http, proc.url, "pulse_socketio_connections") == 0
        await eventually(sockets_released, timeout=30, interval=0.1)
        rss_after = rss_bytes(proc.proc.pid)
        async with http.get(f"{proc.url}/healthz") as resp:
            assert resp.status == 200
    assert proc.proc.poll() is None  # still up
    assert outcome.answered + outcome.closed == len(cases)
    assert outcome.closed > 0 and outcome.answered > 0  # both kinds of outcome were exercised
    if rss_before is not None and rss_after is not None:
        assert rss_after - rss_before < RSS_GROWTH_BYTES, (rss_before, rss_after)
    log = proc.log_path.read_text(errors="replace")
    bad = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
    assert not bad, bad[:20]
