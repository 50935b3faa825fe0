"""``make bench``: fresh stores, 2 Pulse instances, seed, baselines, step load, report.

Everything runs on this machine and talks to 127.0.0.1 only:
- PostgreSQL: a cluster of the bench's own, a primary and a streaming replica
  (``storage/embedded/pg_cluster.py``, removed afterwards), the instances sending their
  lag-tolerant reads to the replica; where one cannot be made (no server binaries), a new
  database ``pulse_bench_<run>`` on the local server, without a replica (dropped afterwards),
- Redis: a free db number claimed like the test sessions do, plus a namespace,
- RabbitMQ: a new vhost (deleted afterwards),
- MongoDB: a SecantusDB server of its own on a free port (in memory).

Sized to finish in well under 10 minutes on 2 cores; knobs (env or flags):
``--users`` (PULSE_BENCH_USERS, default 10000), ``--step-users`` / ``--steps`` /
``--step-seconds`` (the locust step load), ``--skip-baselines``, ``--no-replica`` (the local
PostgreSQL server, no replica), ``--keep`` (leave the stores in place for a look afterwards).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from loadtest import namespaces, report, viral
from loadtest.monitoring import count_reads_by_pool, sample_cpu, sample_replication_lag, scrape_metrics
from loadtest.saturation import cli as saturation
from storage.embedded.pg_cluster import PostgresCluster
from storage.embedded.processes import free_port, secantus_argv, secantus_url, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN_DSN = os.environ.get("PULSE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("PULSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_BASE_URL = os.environ.get("PULSE_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")


def log(message: str) -> None:
    print(f"bench [{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)


class Processes:
    """Children started by the bench, each logging to ``<log_dir>/<name>.log``; stopped by
    their own pid, newest first."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "wb")
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        self.children.append((name, process))
        return process

    def start_server(self, name: str, argv: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
        """A child that serves on ``port``: started, and waited for until the port answers."""
        process = self.start(name, argv, env)
        wait_for_port(port, process=process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10) -> None:
        stop_process(process, timeout)

    def stop_all(self) -> None:
        for _name, process in reversed(self.children):
            self.stop(process)


async def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {process.returncode}")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


# --- store namespaces -----------------------------------------------------------------

class Stores:
    """The bench's namespaces in the local stores (``loadtest.namespaces``, made as the test
    sessions make theirs) and a SecantusDB server of its own."""

    def __init__(self, run_id: str, processes: Processes, replica: bool = True):
        self.run_id = run_id
        self.processes = processes
        self.replica = replica
        self.cluster: PostgresCluster | None = None
        self.pg_database = f"pulse_bench_{run_id}"
        self.vhost = f"pulse_bench_{run_id}"
        self.redis_claim = namespaces.redis_claim(f"bench-{run_id}")
        self.redis_db: int | None = None
        self.mongo_port = free_port()
        self.namespace = f"bench{run_id}"

    @property
    def postgres_admin_dsn(self) -> str:
        return self.cluster.dsn("primary") if self.cluster else PG_ADMIN_DSN

    @property
    def postgres_dsn(self) -> str:
        return namespaces.with_database(self.postgres_admin_dsn, self.pg_database)

    @property
    def postgres_replica_dsn(self) -> str | None:
        return self.cluster.dsn("replica", self.pg_database) if self.cluster else None

    @property
    def redis_url(self) -> str:
        return f"{REDIS_BASE_URL}/{self.redis_db}"

    @property
    def mongo_url(self) -> str:
        return secantus_url(self.mongo_port)

    @property
    def amqp_url(self) -> str:
        return f"{AMQP_BASE_URL}/{self.vhost}"

    async def create(self) -> None:
        if self.replica:
            await self.create_cluster()
        await namespaces.create_database(self.postgres_admin_dsn, self.pg_database)
        if self.cluster:
            await self.cluster.wait_replayed()
        # From the top down: test sessions claim from db 1 up.
        self.redis_db = await asyncio.to_thread(namespaces.claim_redis_db, REDIS_BASE_URL, self.redis_claim,
                                                dbs=range(15, 0, -1), ttl=3600)
        if self.redis_db is None:
            raise RuntimeError("no free Redis db (all 15 claimed by test sessions)")
        await asyncio.to_thread(namespaces.add_vhost, self.vhost)
        await asyncio.to_thread(self.processes.start_server, "secantus", secantus_argv(self.mongo_port),
                                self.mongo_port)

    async def create_cluster(self) -> None:
        """A primary and its streaming replica, sized like a stock server (128MB of shared
        buffers) rather than the tests' 16MB; without server binaries, no replica."""
        reason = PostgresCluster.unavailable()
        if reason:
            log(f"no replica in the bench stack: {reason}")
            return
        cluster = PostgresCluster()
        try:
            await asyncio.to_thread(cluster.create, replica=True, shared_buffers="128MB")
        except BaseException:
            await asyncio.to_thread(cluster.destroy)
            raise
        self.cluster = cluster

    async def drop(self) -> None:
        if self.cluster:
            await asyncio.to_thread(self.cluster.destroy)
            return
        with contextlib.suppress(Exception):
            await namespaces.drop_database(PG_ADMIN_DSN, self.pg_database)
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(namespaces.release_redis_db, REDIS_BASE_URL, self.redis_db, self.redis_claim)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(namespaces.delete_vhost, self.vhost)


# --- phases ---------------------------------------------------------------------------

def server_env(stores: Stores, instance: str) -> dict[str, str]:
    replica = {"PULSE_POSTGRES_REPLICA_DSN": stores.postgres_replica_dsn} if stores.postgres_replica_dsn else {}
    return {
        **replica,
        "PULSE_POSTGRES_DSN": stores.postgres_dsn,
        "PULSE_MONGO_URL": stores.mongo_url,
        "PULSE_MONGO_DB": f"pulse_bench_{stores.run_id}",
        "PULSE_REDIS_URL": stores.redis_url,
        "PULSE_AMQP_URL": stores.amqp_url,
        "PULSE_NAMESPACE": stores.namespace,
        "PULSE_INSTANCE_ID": instance,
        "PULSE_RATE_LIMITS": "off",
        # Seeded and logged-in users verify a cheap hash: logins are not what we measure.
        "PULSE_ARGON2_TIME_COST": "1",
        "PULSE_ARGON2_MEMORY_KIB": "8192",
        "PULSE_ARGON2_PARALLELISM": "1",
        "PULSE_LOG_LEVEL": os.environ.get("PULSE_BENCH_LOG_LEVEL", "WARNING"),
    }


# The server's per-user socket cap (kernel/settings.py sockets_per_user), which the bench
# leaves at its default: the capacity measurement spreads its sockets over enough users.
SOCKETS_PER_USER = int(os.environ.get("PULSE_SOCKETS_PER_USER", "20"))


def pulse_executable() -> list[str]:
    found = shutil.which("pulse", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "server.cli"]


async def start_instances(processes: Processes, stores: Stores, count: int) -> dict[str, str]:
    urls: dict[str, str] = {}
    for i in range(count):
        name = f"pulse-{chr(ord('a') + i)}"
        port = free_port()
        process = processes.start(name, pulse_executable() + ["serve", "--host", "127.0.0.1",
                                                              "--port", str(port)],
                                  env=server_env(stores, name))
        url = f"http://127.0.0.1:{port}"
        # One at a time: the first applies the migrations.
        await wait_http(url + "/readyz", 90, process)
        urls[name] = url
        log(f"{name} ready at {url} (pid {process.pid})")
    return urls


def run_json(argv: list[str], timeout: float) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def fanout_accounts(seed_file: Path, count: int) -> list[dict]:
    """Seeded accounts with a token, for the Pulse chat fan-out (the fan-out host left out)."""
    seed = json.loads(seed_file.read_text())
    host = len(seed["users"]) - 1
    indexes = sorted(int(i) for i in seed["tokens"] if int(i) != host)[:count]
    if len(indexes) < count:
        raise RuntimeError(f"the seed logged in {len(indexes)} accounts, the fan-out needs {count}")
    return [{"token": seed["tokens"][str(i)], "user_id": seed["users"][i]["id"]} for i in indexes]


async def measure_baselines(processes: Processes, stores: Stores, rates: str,
                            seconds: float, broadcast: bool = True) -> dict:
    """Bare aiohttp's JSON endpoint and (``broadcast``) the stepped bare python-socketio
    broadcast; the saturation part measures its own chat baseline instead."""
    result: dict = {}
    http_port = free_port()
    http = processes.start_server("baseline-http", [sys.executable, "-m", "loadtest.baselines",
                                                    "http-server", "--port", str(http_port)], http_port)
    try:
        bare = await asyncio.to_thread(run_json, [
            sys.executable, "-m", "loadtest.baselines", "http-client",
            "--url", f"http://127.0.0.1:{http_port}/json", "--seconds", str(seconds),
            "--concurrency", "32"], seconds + 60)
    finally:
        processes.stop(http)
    result["bare_aiohttp_json"] = bare
    result["bare_aiohttp_json_rps"] = bare.get("per_second")
    result["bare_aiohttp_json_p99_ms"] = bare.get("p99_ms")
    log(f"bare aiohttp JSON ({bare.get('tool')}): {bare.get('per_second')} req/s, "
        f"p99 {bare.get('p99_ms')} ms")
    if not broadcast:
        return result

    ports = [free_port(), free_port()]
    channel = f"{stores.namespace}-bare-sio"
    servers = [processes.start(f"baseline-sio-{i}", [
        sys.executable, "-m", "loadtest.baselines", "sio-server", "--port", str(port),
        "--redis-url", stores.redis_url, "--channel", channel]) for i, port in enumerate(ports)]
    try:
        for port, server in zip(ports, servers):
            wait_for_port(port, process=server)
        sio = await asyncio.to_thread(run_json, [
            sys.executable, "-m", "loadtest.baselines", "sio-client",
            "--urls", ",".join(f"http://127.0.0.1:{p}" for p in ports), *FANOUT_SHAPE,
            "--rates", rates, "--seconds", str(seconds)], 20 * seconds + 60)
    finally:
        for server in servers:
            processes.stop(server)
    result["socketio_broadcast"] = sio
    result["socketio_broadcast_max_per_second"] = sio.get("max_sustained_per_second")
    log(f"bare python-socketio broadcast: {describe_steps(sio)}")
    return result


async def measure_pulse_fanout(pulse_urls: list[str], seed_file: Path, rates: str, seconds: float,
                               bare: dict) -> dict:
    """The bare broadcast's client, shape and rates against Pulse's whole chat path on both
    instances. Run after locust: pushed past its limit it leaves a backlog of sends in
    MongoDB that would weigh on the locust steps."""
    accounts_file = RESULTS / "logs" / "fanout-accounts.json"
    accounts_file.write_text(json.dumps(fanout_accounts(seed_file, FANOUT_ROOMS * FANOUT_PER_ROOM)))
    pulse = await asyncio.to_thread(run_json, [
        sys.executable, "-m", "loadtest.baselines", "pulse-chat-client", "--urls", ",".join(pulse_urls),
        "--accounts", str(accounts_file), *FANOUT_SHAPE, "--rates", rates, "--seconds", str(seconds)],
        20 * seconds + 120)
    log(f"Pulse chat fan-out (message:send, MongoDB, 2 instances): {describe_steps(pulse)}")
    return {"pulse_chat_fanout": pulse, "pulse_chat_fanout_max_per_second": pulse.get("max_sustained_per_second"),
            **fanout_ratios(bare, pulse)}


# Rooms × members of the stepped fan-out (bare python-socketio and Pulse alike): group chats
# of 100, members alternating between the two servers, so every send crosses instances.
FANOUT_ROOMS, FANOUT_PER_ROOM = 2, 100
FANOUT_SHAPE = ["--rooms", str(FANOUT_ROOMS), "--per-room", str(FANOUT_PER_ROOM)]
FANOUT_REFERENCE_RATE = 10000.0


def describe_steps(result: dict) -> str:
    return (f"max sustained {result.get('max_sustained_per_second')} deliveries/s; steps "
            + ", ".join(f"{s['offered_per_second']:.0f}→{s['per_second']:.0f}/s p99 {s['p99_ms']} ms"
                        for s in result.get("steps", [])))


def fanout_ratios(bare: dict, pulse: dict) -> dict:
    """Pulse against bare python-socketio in the same run: p99 at the reference rate (the
    issue's 10k deliveries/s) and the sustained maxima."""
    def p99_at(result: dict) -> float | None:
        step = next((s for s in result.get("steps", []) if s["offered_per_second"] == FANOUT_REFERENCE_RATE), None)
        return step["p99_ms"] if step else None

    out: dict = {"socketio_broadcast_p99_at_10k_ms": p99_at(bare), "pulse_chat_fanout_p99_at_10k_ms": p99_at(pulse)}
    if out["socketio_broadcast_p99_at_10k_ms"] and out["pulse_chat_fanout_p99_at_10k_ms"] is not None:
        out["chat_fanout_p99_ratio_at_10k"] = round(
            out["pulse_chat_fanout_p99_at_10k_ms"] / out["socketio_broadcast_p99_at_10k_ms"], 3)
    if bare.get("max_sustained_per_second"):
        out["chat_fanout_max_sustained_ratio"] = round(
            (pulse.get("max_sustained_per_second") or 0) / bare["max_sustained_per_second"], 3)
    return out


async def measure_capacity(processes: Processes, stores: Stores, urls: dict[str, str],
                           seed_file: Path, count: int) -> dict:
    """Idle sockets on stock python-socketio and on one Pulse instance, KiB per socket.

    Stock python-socketio's cost per socket is flat: 5k sockets are enough to measure it.
    """
    result: dict = {}
    port = free_port()
    bare = processes.start("capacity-sio", [
        sys.executable, "-m", "loadtest.baselines", "sio-server", "--port", str(port),
        "--redis-url", stores.redis_url, "--channel", f"{stores.namespace}-capacity"])
    try:
        wait_for_port(port, process=bare)
        stock = await asyncio.to_thread(run_json, [
            sys.executable, "-m", "loadtest.capacity", "--url", f"http://127.0.0.1:{port}",
            "--pid", str(bare.pid), "--count", str(min(count, 5000))], 300)
    finally:
        processes.stop(bare)
    result["stock_socketio_capacity"] = stock
    result["stock_kib_per_connection"] = stock["kib_per_connection"]
    seeded = len(json.loads(seed_file.read_text()).get("users", []))
    name, url = next(iter(urls.items()))
    pid = next(p.pid for n, p in processes.children if n == name)
    if seeded:
        # As many seeded users as the server's per-user socket cap requires, each at the
        # cap: the server holds what it would for real users, its cap left as deployed.
        pulse = await asyncio.to_thread(run_json, [
            sys.executable, "-m", "loadtest.capacity", "--url", url, "--pid", str(pid),
            "--count", str(count), "--seed-file", str(seed_file),
            "--sockets-per-user", str(SOCKETS_PER_USER)], 420)
        result["pulse_capacity"] = pulse
        result["pulse_idle_connections"] = pulse["held_after_settle"]
        if pulse["kib_per_connection"] is not None:
            result["pulse_kib_per_connection"] = pulse["kib_per_connection"]
    log(f"idle sockets: stock python-socketio {stock['held_after_settle']} held, "
        f"{stock['kib_per_connection']} KiB each; Pulse "
        + (f"{result['pulse_idle_connections']} held, "
           f"{result.get('pulse_kib_per_connection')} KiB each; errors {pulse['errors']}"
           if "pulse_capacity" in result else "not measured (no seeded users)"))
    return result


def profile_instance(processes: Processes, pid: int, seconds: int, out: Path):
    """py-spy collapsed stacks of a loaded instance (summarised in the report; feed the file
    to flamegraph.pl or speedscope.app for a picture), when py-spy is available."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not py_spy:
        return None
    return processes.start("py-spy", [py_spy, "record", "--pid", str(pid), "--duration",
                                      str(seconds), "--rate", "50", "--nonblocking", "--nolineno",
                                      "--format", "raw", "--output", str(out)])


async def run_locust(processes: Processes, urls: dict[str, str], args, seed_file: Path) -> float:
    hosts = ",".join(urls.values())
    env = {
        "PULSE_BENCH_STEP_USERS": str(args.step_users),
        "PULSE_BENCH_STEPS": str(args.steps),
        "PULSE_BENCH_STEP_SECONDS": str(args.step_seconds),
        "PULSE_BENCH_SPAWN_RATE": str(args.spawn_rate),
        "PULSE_SAMPLES_FILE": str(RESULTS / report.SAMPLES_CSV),
    }
    argv = [sys.executable, "-m", "locust", "-f",
            f"{ROOT / args.locustfile},{ROOT / 'loadtest' / 'shape.py'}",
            "--headless", "--host", next(iter(urls.values())),
            "--rest-hosts", hosts, "--socket-hosts", hosts, "--seed-file", str(seed_file),
            "--csv", str(RESULTS / "locust"), "--csv-full-history", "--only-summary",
            "--stop-timeout", "5", "--loglevel", "WARNING",
            "--html", str(RESULTS / "locust.html"), *args.user_classes]
    started = time.monotonic()
    process = processes.start("locust", argv, env=env)
    budget = args.steps * args.step_seconds + 90
    profiler = None
    while process.poll() is None:
        elapsed = time.monotonic() - started
        if elapsed > budget:
            log("locust over its time budget: stopping it")
            processes.stop(process, timeout=20)
            break
        # Profile instance a during the last step (the highest load).
        if (profiler is None and args.profile
                and elapsed > (args.steps - 1) * args.step_seconds + 5):
            pid = next((p.pid for n, p in processes.children if n == "pulse-a"), None)
            if pid:
                profiler = profile_instance(processes, pid, max(5, int(args.step_seconds) - 10),
                                            RESULTS / report.PROFILE_RAW) or False
        await asyncio.sleep(1)
    return time.monotonic() - started


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Children inherit it: one Pulse instance must hold 20k+ sockets plus its pools."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def clear_results() -> Path:
    """Removes what an earlier run left in ``loadtest/results`` (the report must not mix
    two runs); returns the directory for the children's logs."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = RESULTS / "logs"
    logs.mkdir(exist_ok=True)
    for stale in (list(RESULTS.glob("locust*")) + list(RESULTS.glob("*.png"))
                  + list(RESULTS.glob("samples.csv*")) + list(RESULTS.glob("profile-*"))
                  + [RESULTS / report.BASELINES_JSON, RESULTS / report.POOL_CSV,
                     RESULTS / report.REPLICATION_LAG_CSV,
                     RESULTS / report.CPU_CSV, RESULTS / saturation.run.RESULT_JSON]):
        if not stale.exists():
            continue
        stale.unlink()
    return logs


def describe_step_load(args) -> str:
    return f"{args.steps} steps × {args.step_users} users × {args.step_seconds:.0f} s"


def describe_run(args, run_id: str, open_files: int) -> dict:
    """The report's "Run" section, and the step plan it judges the locust samples by."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "run": run_id,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}",
            "instances": args.instances, "users seeded": args.users,
            "open files limit": open_files,
            "step load": describe_step_load(args),
            "step_plan": {"users": [(i + 1) * args.step_users for i in range(args.steps)],
                          "step_seconds": args.step_seconds,
                          "settle_seconds": args.settle_seconds}}


def seed_users(stores: Stores, urls: dict[str, str], args, seed_file: Path) -> str:
    """Seeds users, follows and posts (``loadtest.seed``); logs in the accounts locust will
    use. Returns what was seeded, and how long it took."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "loadtest.seed", "--users", str(args.users),
                           "--dsn", stores.postgres_dsn, "--base-url",
                           next(iter(urls.values())), "--out", str(seed_file),
                           "--login-per-pool", str(args.steps * args.step_users),
                           "--large-accounts", str(args.large_accounts),
                           "--large-followers", str(args.large_followers)],
                          cwd=ROOT, env={**os.environ, **server_env(stores, "seed")},
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError("seeding failed (see above)")
    counts = json.loads(seed_file.read_text()).get("counts", {})
    return f"{counts} in {time.monotonic() - started:.1f} s"


def read_baselines() -> dict:
    path = RESULTS / report.BASELINES_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def add_baselines(figures: dict) -> None:
    """Adds figures measured outside locust to ``baselines.json``, where the report reads them."""
    merged = read_baselines()
    merged.update(figures)
    (RESULTS / report.BASELINES_JSON).write_text(json.dumps(merged, indent=2))


async def step_load(processes: Processes, stores: Stores, urls: dict[str, str], args, seed_file: Path) -> dict:
    """Locust's step load, with each instance's /metrics scraped, the replica's lag and the
    CPU sampled while it runs. Returns what the report says of the run."""
    stop_monitors = asyncio.Event()
    sampled = [scrape_metrics(urls, RESULTS / report.POOL_CSV, RESULTS / report.MONGO_CSV, stop_monitors),
               sample_cpu(processes.children, RESULTS / report.CPU_CSV, stop_monitors)]
    if stores.cluster:
        sampled.append(sample_replication_lag(stores.postgres_admin_dsn, RESULTS / report.REPLICATION_LAG_CSV,
                                              stop_monitors))
    monitors = asyncio.gather(*sampled)
    info: dict = {}
    try:
        log(f"locust: {describe_step_load(args)} against {', '.join(urls.values())}")
        info["load average before locust (1 min)"] = round(os.getloadavg()[0], 2)
        info["locust_seconds"] = round(await run_locust(processes, urls, args, seed_file), 1)
        info["load average after locust (1 min)"] = round(os.getloadavg()[0], 2)
    except BaseException:
        monitors.cancel()
        raise
    finally:
        stop_monitors.set()
    await monitors
    reads = await count_reads_by_pool(urls)
    if reads:
        info["PostgreSQL reads by pool (seed and locust)"] = ", ".join(
            f"{pool} {count:.0f}" for pool, count in sorted(reads.items()))
    locust_log = (processes.log_dir / "locust.log").read_text(errors="replace")
    if "CPU usage above" in locust_log or "CPU usage was too high" in locust_log:
        info["locust CPU"] = ("locust warned that its CPU was saturated: figures include "
                              "load generator delay")
    return info


async def add_viral_fanout(urls: dict[str, str], seed_file: Path, args) -> None:
    """Issue 16, benchmark 1 (``loadtest.viral_fanout``), after locust: the large accounts
    post ten times each while others read their feeds; baseline and viral phases twice.
    Its summary goes into baselines.json, the whole of it beside."""
    from loadtest import viral_fanout

    try:
        fanout = await viral_fanout.fanout_scenario(list(urls.values()), json.loads(seed_file.read_text()),
                                                    rounds=2, phase_seconds=args.viral_fanout_seconds)
    except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log(f"viral fan-out not measured: {exc!r}")
        return
    log(f"viral fan-out: feed p99 ×{fanout['readers_p99_ratio']}, fan-out lag p99 ×{fanout['probe_lag_p99_ratio']}, "
        f"large posts visible within {fanout['large_post_visible_max_ms']} ms "
        f"({'PASS' if fanout['passed'] else 'FAIL'})")
    (RESULTS / viral_fanout.FANOUT_JSON).write_text(json.dumps(fanout, indent=2) + "\n")
    add_baselines({"viral_fanout": {k: fanout[k] for k in viral_fanout.SUMMARY}})


async def add_saturation(processes: Processes, stores: Stores, urls: dict[str, str], seed_file: Path,
                         args) -> None:
    """The saturation part (``loadtest.saturation``), after locust: its writes and a chat
    backlog would weigh on the locust steps. Its figures go into baselines.json."""
    try:
        add_baselines(await saturation.in_bench(processes, stores, urls, seed_file, args, RESULTS))
    except Exception as exc:  # a failed saturation run must not cost the locust report
        log(f"saturation not measured: {exc!r}")


async def add_pulse_fanout(urls: dict[str, str], seed_file: Path, args) -> None:
    """Pulse's chat fan-out against the bare broadcast measured before, into baselines.json."""
    try:
        add_baselines(await measure_pulse_fanout(list(urls.values()), seed_file, args.broadcast_rates,
                                                 args.baseline_seconds,
                                                 read_baselines().get("socketio_broadcast", {})))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log(f"Pulse chat fan-out not measured: {exc}")


async def add_capacity(processes: Processes, stores: Stores, urls: dict[str, str], seed_file: Path,
                       count: int) -> None:
    """Idle-socket capacity, into baselines.json (nothing when it could not be measured)."""
    try:
        capacity = await measure_capacity(processes, stores, urls, seed_file, count)
    except (RuntimeError, subprocess.TimeoutExpired, StopIteration) as exc:
        log(f"capacity not measured: {exc}")
        capacity = {}
    add_baselines(capacity)


async def add_viral_likes(urls: dict[str, str], likes: int) -> None:
    """Issue 16, benchmark 2 (``loadtest.viral``): a burst of likes on one post reaches its
    author as a few pushes and one notification counting them. After locust, before the
    saturation part, whose chat runs leave a backlog in MongoDB. Its summary goes into
    baselines.json, every push's count into viral-likes.json."""
    try:
        result = await viral.likes_scenario(list(urls.values()), likes)
    except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log(f"viral likes not measured: {exc!r}")
        return
    log(f"viral likes: {result['pushes']} pushes, notification count {result['notification_count']} "
        f"({'PASS' if result['passed'] else 'FAIL'})")
    (RESULTS / viral.LIKES_JSON).write_text(json.dumps(result, indent=2) + "\n")
    add_baselines({"viral_likes": {k: result[k] for k in viral.SUMMARY}})


def write_report(args, info: dict, started: float) -> int:
    """report.md from the results; each target's verdict logged. Returns the exit status."""
    (RESULTS / report.RUN_JSON).write_text(json.dumps(info, indent=2))
    path, results = report.build(RESULTS, Path(args.targets))
    failed = [r for r in results if r.passed is False]
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[r.passed]
        value = "–" if r.value is None else f"{r.value:.3f}"
        log(f"{verdict} {r.target.name}: {value} ({r.detail})")
    log(f"report: {path} ({len(failed)} targets failed) in {time.monotonic() - started:.0f} s")
    return 1 if failed and args.strict else 0


async def bench(args) -> int:
    started = time.monotonic()
    open_files = raise_open_files_limit()
    processes = Processes(clear_results())
    run_id = uuid.uuid4().hex[:8]
    stores = Stores(run_id, processes, replica=args.replica)
    info = describe_run(args, run_id, open_files)
    try:
        await stores.create()
        log(f"stores: database {stores.pg_database} on {stores.postgres_admin_dsn}"
            + (f" with a streaming replica at {stores.postgres_replica_dsn}" if stores.cluster else ", no replica")
            + f", redis db {stores.redis_db}, "
            f"vhost {stores.vhost}, SecantusDB :{stores.mongo_port}")
        info["postgres"] = ("a primary and a streaming replica of the bench's own; lag-tolerant reads "
                            "on the replica" if stores.cluster else "the local server, no replica")
        urls = await start_instances(processes, stores, args.instances)
        seed_file = RESULTS / "seed.json"
        info["seed"] = seed_users(stores, urls, args, seed_file)
        if not args.skip_baselines:
            add_baselines(await measure_baselines(processes, stores, args.broadcast_rates,
                                                  args.baseline_seconds, broadcast=args.skip_saturation))
        info.update(await step_load(processes, stores, urls, args, seed_file))
        if args.viral_likes > 0:
            await add_viral_likes(urls, args.viral_likes)
        if args.viral_fanout_seconds > 0 and args.large_accounts > 0:
            await add_viral_fanout(urls, seed_file, args)
        if not args.skip_saturation:
            await add_saturation(processes, stores, urls, seed_file, args)
        elif not args.skip_baselines:
            # The older stepped fan-out (2 rooms of 100); the saturation part's chat run supersedes it.
            await add_pulse_fanout(urls, seed_file, args)
        if args.capacity_count > 0:
            await add_capacity(processes, stores, urls, seed_file, args.capacity_count)
        info["bench_seconds"] = round(time.monotonic() - started, 1)
        return write_report(args, info, started)
    finally:
        processes.stop_all()
        if not args.keep:
            await stores.drop()


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=int(env("PULSE_BENCH_USERS", "10000")))
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--step-users", type=int, default=int(env("PULSE_BENCH_STEP_USERS", "35")))
    parser.add_argument("--steps", type=int, default=int(env("PULSE_BENCH_STEPS", "10")))
    parser.add_argument("--step-seconds", type=float,
                        default=float(env("PULSE_BENCH_STEP_SECONDS", "30")))
    parser.add_argument("--spawn-rate", type=float, default=60)
    parser.add_argument("--settle-seconds", type=float, default=8,
                        help="left out at the start of each step when judging it")
    parser.add_argument("--baseline-seconds", type=float, default=4)
    parser.add_argument("--broadcast-rates", default="1000,2000,4000,6000,8000,10000,15000,20000,30000")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-saturation", action="store_true",
                        help="no saturation part (then the older stepped fan-out runs)")
    parser.add_argument("--capacity-count", type=int,
                        default=int(env("PULSE_BENCH_CAPACITY", "20000")),
                        help="idle sockets opened on one instance (0: skip)")
    parser.add_argument("--viral-likes", type=int, default=int(env("PULSE_BENCH_VIRAL_LIKES", "500")),
                        help="likes on one post within 10 s, after the load (loadtest/viral.py; 0: skip)")
    parser.add_argument("--large-accounts", type=int, default=int(env("PULSE_BENCH_LARGE_ACCOUNTS", "3")),
                        help="seeded accounts with --large-followers followers each (hybrid fan-out; 0: none)")
    parser.add_argument("--large-followers", type=int, default=int(env("PULSE_BENCH_LARGE_FOLLOWERS", "100000")))
    parser.add_argument("--viral-fanout-seconds", type=float, default=float(env("PULSE_BENCH_VIRAL_FANOUT", "8")),
                        help="length of each of the viral fan-out benchmark's 2 baseline and 2 viral phases, "
                             "after the load (loadtest/viral_fanout.py; 0: skip)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--locustfile", default="loadtest/locustfile.py",
                        help="scenarios, relative to the repository (loadtest/hot_rows.py: "
                             "every write on the same profile and post rows)")
    parser.add_argument("--user-classes", nargs="*", default=[],
                        help="locust user classes to run (default: all; e.g. RestUser to "
                             "measure the REST side alone)")
    parser.add_argument("--targets", default=str(report.DEFAULT_TARGETS))
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a target fails (default: report only)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database/vhost")
    parser.add_argument("--no-replica", dest="replica", action="store_false",
                        help="the local PostgreSQL server without a replica (no replication lag figure)")
    saturation.add_options(parser)
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
