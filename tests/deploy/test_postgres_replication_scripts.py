"""deploy/postgres/*.sh, the scripts compose.yml gives the postgres images, run for real
with this machine's PostgreSQL binaries: a throwaway primary gets the init script, and
the replica entrypoint clones it and streams from it (both on free loopback ports)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from storage.embedded.processes import free_port

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "postgres"
REPLICATION = {
    "PG_REPLICATION_USER": "replicator",
    "PG_REPLICATION_PASSWORD": "replication-secret",
    "PG_REPLICATION_SLOT": "pulse_replica",
}


class Machine:
    """Runs PostgreSQL programs as an unprivileged user (postgres refuses root).

    The scripts run from a copy in the work directory: the checkout may lie in a folder
    that user cannot read (a clone under /root, any mode-700 folder)."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        scripts = work_dir / "scripts"
        shutil.copytree(SCRIPTS, scripts)
        scripts.chmod(0o755)
        for script in scripts.iterdir():
            script.chmod(0o755)
        self.primary_init = scripts / "primary-init.sh"
        self.replica_entrypoint = scripts / "replica-entrypoint.sh"
        bin_dir = Path(shutil.which("postgres")).resolve().parent
        self.path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": self.path, "HOME": str(self.work_dir), "LC_ALL": "C.UTF-8", **extra}

    def run(self, *command: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*self.prefix, *command], env=self.env(**env), capture_output=True, text=True, timeout=120
        )
        if check:
            assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done

    def start(self, *command: str, log: Path, **env: str) -> subprocess.Popen:
        with log.open("wb") as out:
            return subprocess.Popen([*self.prefix, *command], env=self.env(**env), stdout=out, stderr=subprocess.STDOUT)

    def sql(self, port: int, query: str, user: str = "pulse", db: str = "pulse") -> str:
        done = self.run("psql", "-X", "-h", str(self.work_dir), "-p", str(port), "-U", user, "-d", db,
                        "-v", "ON_ERROR_STOP=1", "-tAc", query)
        return done.stdout.strip()


def wait_for(predicate, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def machine():
    for program in ("initdb", "pg_ctl", "postgres", "pg_basebackup", "psql", "bash"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed: cannot run the PostgreSQL scripts here")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
    # Not pytest's tmp_path: its parent is private to the user running the tests.
    work_dir = Path(tempfile.mkdtemp(prefix="pulse-pgrepl-"))
    if os.geteuid() == 0:
        shutil.chown(work_dir, user="postgres")
    yield Machine(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)


def pg_ctl_stop(machine: Machine, data: Path) -> None:
    if (data / "postmaster.pid").exists():
        machine.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)


@pytest.fixture(scope="module")
def primary(machine):
    data, port = machine.work_dir / "primary", free_port()
    machine.run("initdb", "-D", str(data), "-U", "pulse", "--auth-local=trust",
                "--auth-host=scram-sha-256")
    machine.run("pg_ctl", "-D", str(data), "-l", str(machine.work_dir / "primary.log"), "-w", "start",
                "-o", f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={machine.work_dir}")
    try:
        machine.sql(port, "CREATE DATABASE pulse", db="postgres")
        # What the postgres image does on first start: run the init scripts with the
        # server up, POSTGRES_USER/POSTGRES_DB set, then restart (here: reload).
        machine.run("bash", str(machine.primary_init), POSTGRES_USER="pulse", POSTGRES_DB="pulse",
                    PGDATA=str(data), PGHOST=str(machine.work_dir), PGPORT=str(port), **REPLICATION)
        machine.sql(port, "SELECT pg_reload_conf()")
        yield port
    finally:
        pg_ctl_stop(machine, data)


@pytest.fixture(scope="module")
def replica(machine, primary):
    data, port = machine.work_dir / "replica", free_port()
    data.mkdir(mode=0o777)
    data.chmod(0o1777)  # as the image's empty volume: world-writable, fixed by the script
    if os.geteuid() == 0:
        shutil.chown(data, user="postgres")
    log = machine.work_dir / "replica.log"

    def start() -> subprocess.Popen:
        return machine.start(
            "bash", str(machine.replica_entrypoint),
            "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={machine.work_dir}",
            log=log, PGDATA=str(data), PG_PRIMARY_HOST="127.0.0.1", PG_PRIMARY_PORT=str(primary),
            PG_REPLICATION_USER=REPLICATION["PG_REPLICATION_USER"],
            PG_REPLICATION_SLOT=REPLICATION["PG_REPLICATION_SLOT"],
            PGPASSWORD=REPLICATION["PG_REPLICATION_PASSWORD"],
        )

    def ready() -> bool:
        return machine.run("pg_isready", "-h", str(machine.work_dir), "-p", str(port), check=False).returncode == 0

    process = start()
    try:
        wait_for(lambda: process.poll() is not None or ready(), "the replica to accept connections", 60)
        assert process.poll() is None, log.read_text()
        yield {"port": port, "data": data, "log": log, "restart": start, "ready": ready, "process": process}
    finally:
        pg_ctl_stop(machine, data)
        process.wait(timeout=30)


def test_primary_init_creates_the_replication_role_and_slot(machine, primary):
    role = machine.sql(primary, "SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = 'replicator'")
    assert role == "t|t"
    slot = machine.sql(primary, "SELECT slot_type, restart_lsn IS NOT NULL FROM pg_replication_slots "
                                "WHERE slot_name = 'pulse_replica'")
    assert slot == "physical|t"  # WAL reserved before the replica's first connection


def test_primary_init_allows_replication_connections_from_the_network(machine, primary):
    rules = machine.sql(primary, "SELECT count(*) FILTER (WHERE error IS NOT NULL), "
                                 "count(*) FILTER (WHERE database = '{replication}' AND user_name = '{replicator}' "
                                 "AND address = 'all' AND auth_method = 'scram-sha-256') FROM pg_hba_file_rules")
    assert rules == "0|1"


def test_replica_is_a_streaming_hot_standby_of_the_primary(machine, primary, replica):
    assert machine.sql(replica["port"], "SELECT pg_is_in_recovery()") == "t"
    assert oct(replica["data"].stat().st_mode & 0o777) == "0o700"
    wait_for(lambda: machine.sql(primary, "SELECT active FROM pg_replication_slots "
                                          "WHERE slot_name = 'pulse_replica'") == "t", "the slot to be in use")
    machine.sql(primary, "CREATE TABLE replicated (note text); INSERT INTO replicated VALUES ('from primary')")
    wait_for(lambda: machine.sql(replica["port"], "SELECT to_regclass('replicated') IS NOT NULL") == "t",
             "the write to reach the replica")
    assert machine.sql(replica["port"], "SELECT note FROM replicated") == "from primary"
    refused = machine.run("psql", "-X", "-h", str(machine.work_dir), "-p", str(replica["port"]), "-U", "pulse",
                          "-d", "pulse", "-c", "INSERT INTO replicated VALUES ('on replica')", check=False)
    assert refused.returncode != 0 and "read-only" in refused.stderr


def test_replica_restart_reuses_its_data_instead_of_cloning_again(machine, primary, replica):
    pg_ctl_stop(machine, replica["data"])
    replica["process"].wait(timeout=30)
    first_log = replica["log"].read_text()
    assert first_log.count("cloning") == 1
    process = replica["restart"]()
    try:
        wait_for(lambda: process.poll() is not None or replica["ready"](), "the replica to come back", 60)
        assert process.poll() is None, replica["log"].read_text()
        assert "cloning" not in replica["log"].read_text()
        machine.sql(primary, "INSERT INTO replicated VALUES ('after restart')")
        wait_for(lambda: machine.sql(replica["port"], "SELECT count(*) FROM replicated") == "2",
                 "streaming to resume")
    finally:
        pg_ctl_stop(machine, replica["data"])
        process.wait(timeout=30)


@pytest.mark.parametrize("missing", sorted(REPLICATION))
def test_primary_init_refuses_to_run_without_its_settings(machine, missing):
    env = {k: v for k, v in REPLICATION.items() if k != missing}
    done = machine.run("bash", str(machine.primary_init), check=False, POSTGRES_USER="pulse", POSTGRES_DB="pulse", **env)
    assert done.returncode != 0
    assert missing in done.stderr


def test_replica_entrypoint_refuses_to_run_without_a_password(machine):
    done = machine.run("bash", str(machine.replica_entrypoint), check=False, PGDATA=str(machine.work_dir / "unused"),
                       PG_PRIMARY_HOST="127.0.0.1", PG_REPLICATION_USER="replicator",
                       PG_REPLICATION_SLOT="pulse_replica")
    assert done.returncode != 0
    assert "PGPASSWORD" in done.stderr
    assert not (machine.work_dir / "unused").exists()
