"""Real-time capacity and fan-out micro-benchmark: `pulse serve` vs bare python-socketio.

Everything runs on 127.0.0.1 (clients spread over 127.0.0.2.. source addresses), bounded
in time. Clients are a light asyncio Engine.IO v4 / Socket.IO v5 websocket client (not
python-socketio: thousands of those would measure the client).

    # memory per idle connection (RSS delta / N)
    python -m loadtest.realtime_perf.bench memory --target pulse --n 5000
    python -m loadtest.realtime_perf.bench memory --target bare --n 5000
    # fan-out: events to groups of G users at a fixed delivery rate
    python -m loadtest.realtime_perf.bench fanout --target pulse --users 2000 --group 100 --rate 10000
    python -m loadtest.realtime_perf.bench fanout --target pulse --persist ...   # offset log + publish (Lua)
    python -m loadtest.realtime_perf.bench fanout --target bare ...
    # a slow consumer: one member of a busy group stops reading its socket (TCP kept
    # open, 4 KiB receive buffer); others' delivery latency and server RSS, with and without it
    python -m loadtest.realtime_perf.bench stalled --group 200 --events-per-s 50 --seconds 20

Stores: PostgreSQL database ``pulse_perf`` (recreated), a Redis db claimed like the test
sessions claim theirs (``loadtest.namespaces``; emptied, given back at the end), a
SecantusDB process, RabbitMQ's default vhost with exchange ``pulse.perf.events``.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from loadtest import namespaces
from loadtest.stalled_socket import StalledSocket
from storage.embedded.processes import ServerProcess, free_port, secantus_argv, secantus_url, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "pulse_perf"
REDIS_BASE_URL = "redis://127.0.0.1:6379"
NAMESPACE = "perf"
CLK = os.sysconf("SC_CLK_TCK")
CLIENTS_PER_WORKER = 5000


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


# --- the light client (runs in worker processes) -------------------------------------------

async def _client(session, url: str, auth: dict, src: str, stats: dict, ready: asyncio.Event) -> None:
    import aiohttp

    ws = await session.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", autoping=True,
                                  max_msg_size=0, compress=0)
    try:
        msg = await ws.receive()
        if not (isinstance(msg.data, str) and msg.data.startswith("0")):
            raise RuntimeError(f"no open packet: {msg.data!r}")
        await ws.send_str("40" + json.dumps(auth))
        msg = await ws.receive()
        if not (isinstance(msg.data, str) and msg.data.startswith("40")):
            raise RuntimeError(f"not connected: {msg.data!r}")
        stats["connected"] += 1
        ready.set()
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.data
            if data == "2":
                await ws.send_str("3")
            elif data.startswith("42"):
                now = time.time()
                payload = orjson.loads(data[2:])[1]
                ts = payload.get("ts")
                stats["received"] += 1
                if ts is not None:
                    stats["latencies"].append(now - ts)
    finally:
        stats["closed"] += 1
        await ws.close()


def _worker(url: str, auths: list[dict], sources: list[str], conn: "mp.connection.Connection") -> None:
    raise_nofile()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker_main(url, auths, sources, conn))


async def _worker_main(url: str, auths: list[dict], sources: list[str], conn) -> None:
    import aiohttp

    stats = {"connected": 0, "received": 0, "closed": 0, "errors": 0, "latencies": []}
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, local_addr=(src, 0)))
                for src in sources]
    tasks: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()

    async def one(i: int, auth: dict) -> None:
        for attempt in range(5):
            try:
                await _client(sessions[i % len(sessions)], url, auth, sources[i % len(sources)], stats,
                              asyncio.Event())
                return
            except (aiohttp.ClientError, OSError, RuntimeError, asyncio.TimeoutError):
                stats["errors"] += 1
                await asyncio.sleep(0.2 * (attempt + 1))

    # Paced: a burst of thousands of handshakes overflows the server's accept backlog.
    for i, auth in enumerate(auths):
        tasks.append(loop.create_task(one(i, auth)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 120
    while stats["connected"] < len(auths) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    conn.send(("connected", stats["connected"], stats["errors"]))
    # Commands: "reset" (clear counters), "report" (send counters + latencies), "stop".
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "reset":
            stats["received"] = 0
            stats["latencies"] = []
            conn.send("ok")
        elif cmd == "report":
            conn.send(("report", stats["received"], stats["latencies"], stats["connected"] - stats["closed"]))
        elif cmd == "stop":
            break
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in sessions:
        await s.close()
    conn.send("stopped")


class Clients:
    """N light clients spread over worker processes and source addresses."""

    def __init__(self, url: str, auths: list[dict]) -> None:
        ctx = mp.get_context("spawn")
        self.workers = []
        per = CLIENTS_PER_WORKER
        for w, start in enumerate(range(0, len(auths), per)):
            parent, child = ctx.Pipe()
            sources = [f"127.0.{w + 1}.{k}" for k in range(2, 10)]
            proc = ctx.Process(target=_worker, args=(url, auths[start:start + per], sources, child), daemon=True)
            proc.start()
            self.workers.append((proc, parent))

    def wait_connected(self) -> tuple[int, int]:
        connected = errors = 0
        for _, conn in self.workers:
            _, c, e = conn.recv()
            connected += c
            errors += e
        return connected, errors

    def reset(self) -> None:
        for _, conn in self.workers:
            conn.send("reset")
        for _, conn in self.workers:
            conn.recv()

    def report(self) -> tuple[int, list[float], int]:
        received, lat, open_ = 0, [], 0
        for _, conn in self.workers:
            conn.send("report")
        for _, conn in self.workers:
            _, r, l, o = conn.recv()
            received += r
            lat.extend(l)
            open_ += o
        return received, lat, open_

    def stop(self) -> None:
        for proc, conn in self.workers:
            try:
                conn.send("stop")
            except OSError:
                pass
        for proc, conn in self.workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# --- the servers -------------------------------------------------------------------------------

class Stores:
    def __init__(self) -> None:
        self.mongo = ServerProcess(secantus_argv, ready_timeout=60)
        self.redis_claim = namespaces.redis_claim(f"perf-{uuid.uuid4().hex[:8]}")
        self.redis_db: int | None = None

    @property
    def redis_url(self) -> str:
        return f"{REDIS_BASE_URL}/{self.redis_db}"

    async def setup(self) -> None:
        await namespaces.drop_database(PG_ADMIN, PG_DB)
        await namespaces.create_database(PG_ADMIN, PG_DB)
        self.redis_db = await asyncio.to_thread(namespaces.claim_redis_db, REDIS_BASE_URL, self.redis_claim)
        if self.redis_db is None:
            raise RuntimeError("no free Redis db (all 15 claimed)")
        await asyncio.to_thread(self.mongo.start)

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update({
            "PULSE_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:5432/{PG_DB}",
            "PULSE_REDIS_URL": self.redis_url,
            "PULSE_MONGO_URL": secantus_url(self.mongo.port),
            "PULSE_MONGO_DB": "pulse_perf",
            "PULSE_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
            "PULSE_AMQP_EXCHANGE": "pulse.perf.events",
            "PULSE_NAMESPACE": NAMESPACE,
            "PULSE_RUN_WORKERS": "false",
            "PULSE_LOG_LEVEL": "WARNING",
            "PULSE_HOST": "127.0.0.1",
            "PULSE_PORT": str(port),
            "PULSE_PG_POOL_MAX": "40",
        })
        return env

    async def users(self, n: int) -> list[tuple[str, str]]:
        """Bulk-inserts n users with one session each: [(user_id, token)]."""
        import asyncpg

        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{PG_DB}")
        try:
            rows, sessions, out = [], [], []
            run = uuid.uuid4().hex[:6]
            for i in range(n):
                uid = uuid.uuid4()
                token = f"perf-{run}-{i}-{uuid.uuid4().hex}"
                rows.append((uid, f"p{run}{i}@perf.test", f"p{run}{i}", "x"))
                sessions.append((hashlib.sha256(token.encode()).digest(), uid, 10**6))
                out.append((str(uid), token))
            await conn.copy_records_to_table("users", records=rows,
                                             columns=["id", "email", "username", "password_hash"])
            await conn.executemany(
                "INSERT INTO profiles (user_id, display_name) SELECT $1::uuid, 'perf'", [(r[0],) for r in rows])
            await conn.executemany(
                "INSERT INTO sessions (token_hash, user_id, expires_at) "
                "VALUES ($1, $2, now() + make_interval(secs => $3))", sessions)
            return out
        finally:
            await conn.close()

    def stop(self) -> None:
        self.mongo.stop()
        if self.redis_db is not None:
            namespaces.release_redis_db(REDIS_BASE_URL, self.redis_db, self.redis_claim)
            self.redis_db = None


# With ``--trace``: the server runs under tracemalloc, and each SIGUSR1 writes a snapshot
# (plus live object counts by type) to TRACE_DIR/N.*, so the bench can diff them.
TRACE_DIR = Path("/tmp/realtime_perf_trace")
TRACE_HOOK = (
    "import tracemalloc, signal, gc, pickle, collections, itertools; tracemalloc.start(12)\n"
    "_n = itertools.count()\n"
    "def _dump(*_):\n"
    "    i = next(_n); gc.collect()\n"
    "    tracemalloc.take_snapshot().dump(f'" + str(TRACE_DIR) + "/{i}.snap')\n"
    "    c = collections.Counter(f'{type(o).__module__}.{type(o).__qualname__}' for o in gc.get_objects())\n"
    "    pickle.dump(dict(c), open(f'" + str(TRACE_DIR) + "/{i}.types', 'wb'))\n"
    "    open(f'" + str(TRACE_DIR) + "/{i}.done', 'w').close()\n"
    "signal.signal(signal.SIGUSR1, _dump)\n"
)


def start_server(target: str, stores: Stores, trace: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(f"/tmp/realtime_perf_{target}.log", "ab")
    if target == "pulse":
        cmd = [sys.executable, "-c",
               (TRACE_HOOK if trace else "") +
               "import resource,sys; s,h=resource.getrlimit(resource.RLIMIT_NOFILE); "
               "resource.setrlimit(resource.RLIMIT_NOFILE,(h,h)); "
               "from server.cli import main; sys.exit(main(['serve']))"]
        env = stores.env(port)
    else:
        cmd = [sys.executable, "-c",
               "import resource,sys; s,h=resource.getrlimit(resource.RLIMIT_NOFILE); "
               "resource.setrlimit(resource.RLIMIT_NOFILE,(h,h)); sys.argv=['bare','--port',sys.argv[1],"
               "'--redis',sys.argv[2]]; from loadtest.realtime_perf.bare_sio import main; main()",
               str(port), stores.redis_url]
        env = dict(os.environ)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, 60, process=proc)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    stop_process(proc, 30)


async def make_auths(target: str, stores: Stores, n: int, group: int) -> tuple[list[dict], list[str]]:
    if target == "pulse":
        users = await stores.users(n)
        return [{"token": t} for _, t in users], [u for u, _ in users]
    ids = [f"u{i}" for i in range(n)]
    return [{"token": u, "group": i // group} for i, u in enumerate(ids)], ids


# --- the measurements -------------------------------------------------------------------------

async def trace_snapshot(proc: subprocess.Popen, i: int) -> None:
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while not (TRACE_DIR / f"{i}.done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no trace snapshot")
        await asyncio.sleep(0.5)


def trace_report(n: int, top: int = 25) -> None:
    """Per-connection allocations (tracemalloc diff by traceback) and objects (by type)."""
    import pickle
    import tracemalloc

    before = tracemalloc.Snapshot.load(str(TRACE_DIR / "0.snap"))
    after = tracemalloc.Snapshot.load(str(TRACE_DIR / "1.snap"))
    diff = after.compare_to(before, "traceback")
    total = sum(d.size_diff for d in diff)
    print(f"# tracemalloc: {total / n:.0f} B per connection traced (Python allocations)", file=sys.stderr)
    for d in diff[:top]:
        print(f"# {d.size_diff / n:8.0f} B {d.count_diff / n:6.2f} blocks/conn", file=sys.stderr)
        for frame in list(d.traceback)[-6:]:
            print(f"#     {frame.filename.split('site-packages/')[-1]}:{frame.lineno}", file=sys.stderr)
    t0 = pickle.load(open(TRACE_DIR / "0.types", "rb"))
    t1 = pickle.load(open(TRACE_DIR / "1.types", "rb"))
    counts = sorted(((t1.get(k, 0) - t0.get(k, 0)) / n, k) for k in t1)
    print("# gc-tracked objects per connection, by type:", file=sys.stderr)
    for per, k in reversed(counts[-30:]):
        print(f"# {per:6.2f} {k}", file=sys.stderr)


async def measure_memory(args) -> dict:
    stores = Stores()
    await stores.setup()
    if args.trace:
        import shutil
        shutil.rmtree(TRACE_DIR, ignore_errors=True)
        TRACE_DIR.mkdir()
    proc, url = start_server(args.target, stores, trace=args.trace)
    clients = None
    try:
        auths, _ = await make_auths(args.target, stores, args.n + 50, 100)
        # Warm-up: a first batch of sockets so lazily built state is not counted per connection.
        warm = Clients(url, auths[:50])
        warm.wait_connected()
        await asyncio.sleep(2)
        if args.trace:
            await trace_snapshot(proc, 0)
        before = rss_kib(proc.pid)
        clients = Clients(url, auths[50:])
        connected, errors = clients.wait_connected()
        await asyncio.sleep(args.settle)
        after = rss_kib(proc.pid)
        if args.trace:
            await trace_snapshot(proc, 1)
            trace_report(connected)
        _, _, still_open = clients.report()
        result = {
            "target": args.target, "n_requested": args.n, "connected": connected, "open_after_settle": still_open,
            "connect_errors": errors, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": round((after - before) / max(1, connected), 2),
            # Sockets that connected after the wait (slow handshakes under a big burst) count too.
            "kib_per_open_connection": round((after - before) / max(1, still_open), 2),
        }
        clients.stop()
        warm.stop()
        return result
    finally:
        stop_server(proc)
        stores.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class ClientGroups:
    """Several ``Clients`` (one per server) driven as one."""

    def __init__(self, groups: list[Clients]) -> None:
        self.groups = groups

    def wait_connected(self) -> tuple[int, int]:
        results = [g.wait_connected() for g in self.groups]
        return sum(c for c, _ in results), sum(e for _, e in results)

    def reset(self) -> None:
        for g in self.groups:
            g.reset()

    def report(self) -> tuple[int, list[float], int]:
        received, lat, open_ = 0, [], 0
        for g in self.groups:
            r, l, o = g.report()
            received += r
            lat.extend(l)
            open_ += o
        return received, lat, open_

    def stop(self) -> None:
        for g in self.groups:
            g.stop()


async def measure_fanout(args) -> dict:
    import redis.asyncio as aioredis
    import socketio

    stores = Stores()
    await stores.setup()
    # --instances 2: users alternate between two servers on the same stores, so each
    # group's deliveries cross instances through Redis (the publisher is neither).
    servers = [start_server(args.target, stores) for _ in range(args.instances)]
    procs = [proc for proc, _ in servers]
    clients = None
    try:
        auths, ids = await make_auths(args.target, stores, args.users, args.group)
        groups = [ids[i:i + args.group] for i in range(0, len(ids), args.group)]
        clients = ClientGroups([Clients(url, auths[k::len(servers)]) for k, (_, url) in enumerate(servers)])
        connected, errors = clients.wait_connected()
        await asyncio.sleep(2)
        redis = aioredis.from_url(stores.redis_url)
        if args.target == "bare":
            mgr = socketio.AsyncRedisManager(stores.redis_url, channel="perf-bare-sio", write_only=True)

            async def publish(g: int, data: dict) -> None:
                await mgr.emit("message:new", data, room=f"g:{g}", namespace="/")
        else:
            from storage.redis.client import Keys
            from storage.redis.offset_log import OffsetLogStore

            log = OffsetLogStore(redis, Keys(NAMESPACE), 1000, 3600)

            async def publish(g: int, data: dict) -> None:
                data_json = orjson.dumps(data)
                if args.persist:
                    await log.append_and_publish(groups[g], "message:new", data_json)
                else:
                    await log.publish_ephemeral(groups[g], "message:new", data_json)

        events_per_s = args.rate / args.group
        tick = 0.01
        results = []
        for phase in ("warmup", "run"):
            clients.reset()
            seconds = 2 if phase == "warmup" else args.seconds
            cpu0, t0 = sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
            sent = 0
            due = 0.0
            g = 0
            while (now := time.monotonic()) - t0 < seconds:
                due = (now - t0) * events_per_s
                batch = []
                while sent < due:
                    batch.append(publish(g, {"ts": time.time(), "body": "x" * args.body, "seq": sent}))
                    g = (g + 1) % len(groups)
                    sent += 1
                if batch:
                    await asyncio.gather(*batch)
                await asyncio.sleep(tick)
            elapsed = time.monotonic() - t0
            await asyncio.sleep(args.drain)
            cpu1 = sum(cpu_seconds(p.pid) for p in procs)
            received, lat, open_ = clients.report()
            if phase == "run":
                expected = sent * args.group
                results = {
                    "target": args.target + ("+persist" if args.persist else ""), "instances": len(procs),
                    "users": args.users, "group": args.group, "connected": connected, "connect_errors": errors,
                    "offered_deliveries_per_s": round(expected / elapsed),
                    "delivered": received, "expected": expected,
                    "delivered_per_s": round(received / elapsed),
                    "server_cpu_percent": round(100 * (cpu1 - cpu0) / (elapsed + args.drain), 1),
                    "server_cpu_us_per_delivery": round(1e6 * (cpu1 - cpu0) / max(1, received), 2),
                    "latency_ms_p50": round(1000 * percentile(lat, 0.50), 2),
                    "latency_ms_p99": round(1000 * percentile(lat, 0.99), 2),
                    "latency_ms_max": round(1000 * max(lat), 2) if lat else None,
                    "open_sockets": open_,
                }
        await redis.aclose()
        return results
    finally:
        if clients is not None:
            clients.stop()
        for proc in procs:
            stop_server(proc)
        stores.stop()


async def measure_stalled(args) -> dict:
    """One busy group conversation (every member on one instance, events through the
    offset log like chat messages): a baseline run, then the same run with one more
    member whose socket stalls. Each phase reports the other members' delivery latency
    and the server's RSS (sampled every 0.2 s)."""
    import redis.asyncio as aioredis

    from storage.redis.client import Keys
    from storage.redis.offset_log import OffsetLogStore

    stores = Stores()
    await stores.setup()
    env_extra = {"PULSE_RATE_LIMITS": "off"}
    if args.socket_budget:
        env_extra["PULSE_SOCKET_MAX_BUFFERED_BYTES"] = str(args.socket_budget)
    original_env = stores.env
    stores.env = lambda port: {**original_env(port), **env_extra}
    proc, url = start_server("pulse", stores)
    clients = None
    stalled = None
    try:
        users = await stores.users(args.group + 1)
        (stalled_id, stalled_token), members = users[0], users[1:]
        clients = Clients(url, [{"token": t} for _, t in members])
        connected, errors = clients.wait_connected()
        redis = aioredis.from_url(stores.redis_url)
        log = OffsetLogStore(redis, Keys(NAMESPACE), 1000, 3600)
        body = "x" * args.body

        async def run(phase: str, recipients: list[str], seconds: float) -> dict:
            clients.reset()
            rss: list[int] = []
            sent = 0
            t0 = time.monotonic()
            next_sample = t0
            while (now := time.monotonic()) - t0 < seconds:
                due = (now - t0) * args.events_per_s
                while sent < due:
                    await log.append_and_publish(recipients, "message:new", orjson.dumps(
                        {"ts": time.time(), "seq": sent, "message": {"body": body}}))
                    sent += 1
                if now >= next_sample:
                    rss.append(rss_kib(proc.pid))
                    next_sample = now + 0.2
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - t0
            await asyncio.sleep(args.drain)
            rss.append(rss_kib(proc.pid))
            received, lat, open_ = clients.report()
            return {
                "phase": phase, "events": sent, "events_per_s": round(sent / elapsed, 1),
                "others_expected": sent * len(members), "others_received": received,
                "others_latency_ms_p50": round(1000 * percentile(lat, 0.50), 2),
                "others_latency_ms_p99": round(1000 * percentile(lat, 0.99), 2),
                "others_latency_ms_max": round(1000 * max(lat), 2) if lat else None,
                "others_open_sockets": open_,
                "rss_kib_start": rss[0], "rss_kib_max": max(rss), "rss_kib_end": rss[-1],
            }

        member_ids = [u for u, _ in members]
        await run("warmup", member_ids, 3)
        phases = []
        for r in range(args.rounds):
            phases.append(await run(f"baseline-{r + 1}", member_ids, args.seconds))
            stalled = await StalledSocket().connect(url, stalled_token)
            result = await run(f"stalled-{r + 1}", [stalled_id, *member_ids], args.seconds)
            result["stalled_bytes_read_after"], result["stalled_dropped_by_server"] = await stalled.drain()
            stalled.close()
            stalled = None
            phases.append(result)
        await redis.aclose()
        base = [p["others_latency_ms_p99"] for p in phases if p["phase"].startswith("baseline")]
        with_stalled = [p["others_latency_ms_p99"] for p in phases if p["phase"].startswith("stalled")]
        return {
            "group": args.group, "events_per_s": args.events_per_s, "body_bytes": args.body,
            "deliveries_per_s": args.events_per_s * args.group, "seconds_per_phase": args.seconds,
            "socket_budget_bytes": args.socket_budget or "default", "connected": connected,
            "connect_errors": errors, "phases": phases,
            "p99_ms_baseline_median": round(sorted(base)[len(base) // 2], 2),
            "p99_ms_stalled_median": round(sorted(with_stalled)[len(with_stalled) // 2], 2),
        }
    finally:
        if stalled is not None:
            stalled.close()
        if clients is not None:
            clients.stop()
        stop_server(proc)
        stores.stop()


def main() -> None:
    raise_nofile()
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--target", choices=["pulse", "bare"], default="pulse")
    m.add_argument("--n", type=int, default=5000)
    m.add_argument("--settle", type=float, default=5.0)
    m.add_argument("--trace", action="store_true",
                   help="pulse: tracemalloc + object counts per connection (on stderr; RSS is then inflated)")
    f = sub.add_parser("fanout")
    f.add_argument("--target", choices=["pulse", "bare"], default="pulse")
    f.add_argument("--users", type=int, default=2000)
    f.add_argument("--group", type=int, default=100)
    f.add_argument("--rate", type=float, default=10000, help="offered deliveries per second")
    f.add_argument("--seconds", type=float, default=10)
    f.add_argument("--drain", type=float, default=2.0)
    f.add_argument("--body", type=int, default=100)
    f.add_argument("--persist", action="store_true", help="pulse: offset log + publish (the chat path)")
    f.add_argument("--instances", type=int, default=1, help="servers; users alternate between them")
    st = sub.add_parser("stalled")
    st.add_argument("--group", type=int, default=200, help="members reading their sockets")
    st.add_argument("--events-per-s", type=float, default=50, help="messages per second to the group")
    st.add_argument("--seconds", type=float, default=20, help="per phase")
    st.add_argument("--rounds", type=int, default=2, help="baseline + stalled pairs")
    st.add_argument("--drain", type=float, default=2.0)
    st.add_argument("--body", type=int, default=1000)
    st.add_argument("--socket-budget", type=int, default=0,
                    help="PULSE_SOCKET_MAX_BUFFERED_BYTES for the server (0: its default)")
    args = p.parse_args()
    run = {"memory": measure_memory, "fanout": measure_fanout, "stalled": measure_stalled}[args.cmd]
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
