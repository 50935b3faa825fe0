"""CPU accounting from /proc: child processes that burn or idle, the PostgreSQL backends of
one database, the Redis server. (Not this process: it also serves the session's app.)"""
from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from loadtest.saturation import cpu

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _child(code: str):
    return subprocess.Popen([sys.executable, "-c", code])


BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"


async def test_a_busy_process_is_charged_its_cpu_and_the_machine_is_busy():
    # A child that burns 0.3 s of CPU when told to, says so, and then idles.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nprint('ready', flush=True)\n"
                              "sys.stdin.readline()\n" + BURN.format(seconds=0.3) +
                              "\nprint('done', flush=True)\ntime.sleep(30)"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        meter = cpu.CpuMeter({"child": cpu.fixed(child.pid), "gone": cpu.fixed(2**22 + 1)})
        before = meter.snapshot()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        usage = meter.delta(before, meter.snapshot())
    finally:
        child.kill()
        child.wait()
    # Clock ticks are 10 ms: 0.3 s of CPU reads as 0.28–0.32 s, a tick more for the prints.
    assert 0.27 <= usage.cpu_seconds["child"] <= 0.35
    assert usage.cpu_seconds["gone"] == 0.0  # no such process: nothing charged
    assert usage.seconds >= 0.27
    assert usage.percent_of_core("child") == 100 * usage.cpu_seconds["child"] / usage.seconds
    # The machine was busy at least with that process (how much more depends on the
    # machine's other work; 0.95 for the tick rounding of both counters).
    own_share = usage.percent_of_core("child") / (os.cpu_count() or 1)
    assert 0.95 * own_share <= usage.machine_percent <= 100
    assert usage.total(["child", "gone", "absent"]) == usage.cpu_seconds["child"]


async def test_postgres_backends_are_found_by_their_database(pg_dsn):
    database = pg_dsn.rpartition("/")[2]
    conn = await asyncpg.connect(pg_dsn)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        found = list(cpu.postgres_backends(database)())
        assert backend in found
        assert backend not in list(cpu.postgres_backends(database + "_other")())
        meter = cpu.CpuMeter({"pg": cpu.postgres_backends(database)})
        before = meter.snapshot()
        await conn.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        usage = meter.delta(before, meter.snapshot())
        assert usage.cpu_seconds["pg"] > 0  # the query's CPU was on that backend
    finally:
        await conn.close()


async def test_the_redis_server_is_found_by_its_port(redis_url):
    from urllib.parse import urlsplit

    port = urlsplit(redis_url).port or 6379
    pids = list(cpu.redis_server(port)())
    assert pids and all(open(f"/proc/{p}/comm").read().strip() == "redis-server" for p in pids)
    assert list(cpu.redis_server(1)()) == []


async def test_waiting_for_quiet_processes():
    # Children of their own: this test process also serves the session's app instance.
    idle = _child("import time; time.sleep(30)")
    spinning = _child(BURN.format(seconds=30))
    try:
        # An idle process is quiet at once: one window.
        assert cpu.wait_quiet(cpu.CpuMeter({"idle": cpu.fixed(idle.pid)}), ["idle"], window=0.2) < 1.0
        # A spinning one never is (a share of a core so small that any tick of CPU in a
        # window counts, however busy the machine): the wait ends at the timeout.
        meter = cpu.CpuMeter({"spin": cpu.fixed(spinning.pid)})
        waited = cpu.wait_quiet(meter, ["spin"], window=0.2, timeout=0.6, quiet_fraction=0.001)
        assert 0.6 <= waited < 1.5
    finally:
        for child in (idle, spinning):
            child.kill()
            child.wait()
