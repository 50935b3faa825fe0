"""A PostgreSQL cluster of one's own: a primary and, optionally, a streaming replica
(pg_basebackup -R), on free ports in a temporary directory, each node stoppable and
startable again. For the tests of the read replica and of PostgreSQL going down
(``tests/helpers/pg_cluster.py``) and for the bench's stack with a replica (``loadtest/bench.py``).

Synchronous and blocking like ``processes.py``, except ``wait_replayed``.
"""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from storage.embedded.processes import free_port


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

    def create(self, *, replica: bool = True, shared_buffers: str = "16MB") -> "PostgresCluster":
        primary = self.datadir("primary")
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(primary / "postgresql.conf", "a") as conf:
            # Fast and throwaway: this cluster lives for one test module or bench run.
            # initdb's pg_hba.conf already lets 127.0.0.1 replicate with trust.
            conf.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n"
                       "full_page_writes = off\nwal_level = replica\n"
                       f"max_wal_senders = 4\nhot_standby = on\nshared_buffers = {shared_buffers}\n")
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
