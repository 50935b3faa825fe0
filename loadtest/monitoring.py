"""What the bench samples while locust runs: each instance's ``/metrics`` (PostgreSQL pool
gauges, MongoDB command timings), the replica's replay lag on the primary and the CPU of the bench's children, the local store
servers and the machine (from ``/proc``, with the readers of ``loadtest/saturation/cpu.py``).
Each writes a CSV of ``loadtest/results/`` that ``loadtest.report`` reads."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import subprocess
import time
from pathlib import Path

import aiohttp
import asyncpg

from loadtest.saturation.cpu import CLOCK_TICKS, machine_ticks, process_ticks, running_processes

POOL_LINE = re.compile(r"^pulse_pg_pool_(size|in_use|max|in_use_peak|exhausted_total)\s+([0-9.eE+-]+)$", re.M)
MONGO_LINE = re.compile(r'^pulse_mongo_command_duration_seconds_(sum|count)\{command="[^"]*",kind="(read|write)"\}'
                        r"\s+([0-9.eE+-]+)$", re.M)


READS_LINE = re.compile(r'^pulse_pg_reads_total\{pool="(primary|replica)"\}\s+([0-9.eE+-]+)$', re.M)


def reads_by_pool(metrics_text: str) -> dict[str, float]:
    """PostgreSQL reads so far by the pool that served them ({"primary": n, "replica": m})."""
    return {pool: float(value) for pool, value in READS_LINE.findall(metrics_text)}


async def count_reads_by_pool(urls: dict[str, str]) -> dict[str, float]:
    """The instances' reads by pool, summed: how many lag-tolerant reads the replica took."""
    totals: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for url in urls.values():
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    for pool, value in reads_by_pool(await r.text()).items():
                        totals[pool] = totals.get(pool, 0.0) + value
    return totals


def mongo_totals(metrics_text: str) -> dict[str, dict[str, float]]:
    """{kind: {"count": n, "sum": seconds}} over every MongoDB command of that kind."""
    totals: dict[str, dict[str, float]] = {}
    for field, kind, value in MONGO_LINE.findall(metrics_text):
        entry = totals.setdefault(kind, {"count": 0.0, "sum": 0.0})
        entry[field] += float(value)
    return totals


async def scrape_metrics(urls: dict[str, str], out: Path, mongo_out: Path, stop: asyncio.Event,
                      interval: float = 5.0) -> None:
    """Samples each instance's pool gauges and MongoDB command timings. Rendering /metrics
    costs an instance several ms of its event loop, so it is scraped every few seconds (as
    Prometheus would); the peak gauge, the exhaustion counter and the timing sums keep what
    happened between two scrapes."""
    with open(out, "w", newline="") as handle, open(mongo_out, "w", newline="") as mongo_handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "instance", "size", "in_use", "in_use_peak", "exhausted"])
        mongo_writer = csv.writer(mongo_handle)
        mongo_writer.writerow(["t", "instance", "kind", "count", "sum_seconds"])
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                for name, url in urls.items():
                    try:
                        async with session.get(url + "/metrics",
                                               timeout=aiohttp.ClientTimeout(total=2)) as r:
                            text = await r.text()
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        continue
                    now = round(time.time(), 3)
                    for kind, total in sorted(mongo_totals(text).items()):
                        mongo_writer.writerow([now, name, kind, total["count"], total["sum"]])
                    values = {k: float(v) for k, v in POOL_LINE.findall(text)}
                    if "in_use" in values:
                        # Exhausted means every connection the pool may open is busy.
                        size = values.get("max", values.get("size", 0))
                        writer.writerow([now, name, size, values["in_use"],
                                         values.get("in_use_peak", values["in_use"]),
                                         values.get("exhausted_total", 0)])
                handle.flush()
                mongo_handle.flush()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)


# --- replication lag ------------------------------------------------------------------------

REPLAY_LAG = ("SELECT application_name, EXTRACT(epoch FROM replay_lag)::float8 FROM pg_stat_replication "
              "ORDER BY application_name")


async def sample_replication_lag(primary_dsn: str, out: Path, stop: asyncio.Event,
                                 interval: float = 0.1) -> None:
    """Every replica's replay lag as the primary sees it (``pg_stat_replication``), every
    ``interval``, on a connection of its own (none of the instances' pools). An empty figure:
    the primary showed no lag, the replica having replayed everything and no WAL pending."""
    conn = await asyncpg.connect(primary_dsn)
    try:
        with open(out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["t", "replica", "replay_lag_seconds"])
            while not stop.is_set():
                now = round(time.time(), 3)
                for name, seconds in await conn.fetch(REPLAY_LAG):
                    writer.writerow([now, name, "" if seconds is None else round(seconds, 6)])
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        await conn.close()


# --- CPU ------------------------------------------------------------------------------------

STORE_PROCESSES = {"postgres": "postgresql", "redis-server": "redis", "beam.smp": "rabbitmq"}


def _store_ticks() -> dict[str, int]:
    """CPU ticks of the local store servers, summed by store (read-only look at /proc)."""
    totals: dict[str, int] = {}
    for pid, comm, _cmdline in running_processes():
        store = STORE_PROCESSES.get(comm)
        if store:
            ticks = process_ticks(pid)
            if ticks is not None:
                totals[store] = totals.get(store, 0) + ticks
    return totals


async def sample_cpu(children: list[tuple[str, subprocess.Popen]], out: Path, stop: asyncio.Event,
                     interval: float = 2.0) -> None:
    """Percent of one core used by each of ``children`` (name, process; a live list: those
    started later are sampled too) and each store, plus the machine."""
    previous: dict[str, int] = {}
    busy_before = machine_ticks()
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "process", "cpu_percent"])
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            now = time.time()
            current = {name: process_ticks(p.pid) for name, p in children
                       if p.poll() is None}
            current.update(await asyncio.to_thread(_store_ticks))
            for name, ticks in current.items():
                if ticks is not None and name in previous:
                    writer.writerow([round(now, 3), name, round(
                        100 * (ticks - previous[name]) / CLOCK_TICKS / interval, 1)])
            previous = {k: v for k, v in current.items() if v is not None}
            busy_now = machine_ticks()
            total = busy_now[1] - busy_before[1]
            if total:
                writer.writerow([round(now, 3), "machine (all cores, %)",
                                 round(100 * (busy_now[0] - busy_before[0]) / total, 1)])
            busy_before = busy_now
            handle.flush()
