"""CPU accounting from /proc: this very process, and the PostgreSQL backends of one database."""
from __future__ import annotations

import os
import time

import asyncpg
import pytest

from loadtest.saturation import cpu

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        sum(range(1000))


async def test_a_busy_process_is_charged_its_cpu_and_the_machine_is_busy():
    meter = cpu.CpuMeter({"me": cpu.fixed(os.getpid()), "gone": cpu.fixed(2**22 + 1)})
    before = meter.snapshot()
    _burn(0.3)
    usage = meter.delta(before, meter.snapshot())
    # Clock ticks are 10 ms: 0.3 s of CPU reads as 0.28–0.32 s or a tick more.
    assert 0.27 <= usage.cpu_seconds["me"] <= 0.45
    assert usage.cpu_seconds["gone"] == 0.0  # no such process: nothing charged
    assert usage.seconds >= 0.27
    assert usage.percent_of_core("me") == 100 * usage.cpu_seconds["me"] / usage.seconds
    # The machine was busy at least with this process (how much more depends on the
    # machine's other work; 0.95 for the tick rounding of both counters).
    own_share = usage.percent_of_core("me") / (os.cpu_count() or 1)
    assert 0.95 * own_share <= usage.machine_percent <= 100
    assert usage.total(["me", "gone", "absent"]) == usage.cpu_seconds["me"]


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
    import threading

    meter = cpu.CpuMeter({"me": cpu.fixed(os.getpid())})
    # An idle process is quiet at once: one window.
    assert cpu.wait_quiet(meter, ["me"], window=0.2) < 1.0
    # A busy one is waited for until it stops.
    busy = threading.Thread(target=_burn, args=(1.0,))
    busy.start()
    waited = cpu.wait_quiet(meter, ["me"], window=0.2, timeout=10)
    busy.join()
    assert waited >= 0.6
    # One that does not stop in time: the wait ends at the timeout.
    def spin(until: float) -> None:
        while time.monotonic() < until:
            _burn(0.05)

    spinner = threading.Thread(target=spin, args=(time.monotonic() + 1.5,))
    spinner.start()
    assert 0.6 <= cpu.wait_quiet(meter, ["me"], window=0.2, timeout=0.6) < 1.5
    spinner.join()
