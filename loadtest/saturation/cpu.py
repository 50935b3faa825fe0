"""CPU time of the processes a measurement costs, read from /proc (Linux).

A ``CpuMeter`` knows groups of processes by how to find them (fixed pids, the PostgreSQL
backends of one database, a Redis server by its port, the RabbitMQ node); ``snapshot()``
reads utime+stime of every process found and the machine's busy time, and ``delta()``
turns two snapshots into CPU seconds per group and the machine's busy %. Processes are
looked up again at every snapshot, so a backend opened during a window counts from its
start.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

PidFinder = Callable[[], Iterable[int]]


def process_ticks(pid: int) -> int | None:
    """utime + stime of a process in clock ticks, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def running_processes() -> Iterable[tuple[int, str, str]]:
    """(pid, comm, cmdline with spaces) of every process we may read."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as handle:
                comm = handle.read().strip()
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        yield int(entry.name), comm, cmdline


def fixed(*pids: int) -> PidFinder:
    return lambda: pids


def postgres_backends(database: str) -> PidFinder:
    """Backends connected to ``database`` (their title names it: "postgres: ... user db host")."""
    needle = f" {database} "
    return lambda: [pid for pid, comm, cmd in running_processes()
                    if comm == "postgres" and needle in cmd + " "]


def redis_server(port: int) -> PidFinder:
    needle = f":{port}"
    return lambda: [pid for pid, comm, cmd in running_processes()
                    if comm == "redis-server" and needle in cmd]


def rabbitmq_node() -> PidFinder:
    # The broker's beam.smp boots "rabbit"; rabbitmqctl runs a beam.smp of its own.
    return lambda: [pid for pid, comm, cmd in running_processes()
                    if comm == "beam.smp" and "-s rabbit boot" in cmd]


@dataclass(frozen=True)
class Snapshot:
    at: float
    ticks: dict[str, dict[int, int]]
    machine: tuple[int, int]


@dataclass(frozen=True)
class Usage:
    seconds: float                       # wall time between the snapshots
    cpu_seconds: dict[str, float]        # per group
    machine_percent: float | None        # all cores, 0..100

    def percent_of_core(self, group: str) -> float:
        return 100 * self.cpu_seconds.get(group, 0.0) / self.seconds if self.seconds else 0.0

    def total(self, groups: Iterable[str]) -> float:
        return sum(self.cpu_seconds.get(g, 0.0) for g in groups)


class CpuMeter:
    def __init__(self, groups: dict[str, PidFinder]):
        self.groups = dict(groups)

    def add(self, name: str, finder: PidFinder) -> None:
        self.groups[name] = finder

    def snapshot(self) -> Snapshot:
        ticks: dict[str, dict[int, int]] = {}
        for name, finder in self.groups.items():
            found = {}
            for pid in finder():
                value = process_ticks(pid)
                if value is not None:
                    found[pid] = value
            ticks[name] = found
        return Snapshot(time.monotonic(), ticks, machine_ticks())

    @staticmethod
    def delta(before: Snapshot, after: Snapshot) -> Usage:
        cpu = {}
        for name, now in after.ticks.items():
            then = before.ticks.get(name, {})
            cpu[name] = sum(v - then.get(pid, 0) for pid, v in now.items()) / CLOCK_TICKS
        busy = after.machine[0] - before.machine[0]
        total = after.machine[1] - before.machine[1]
        return Usage(round(after.at - before.at, 3), {k: round(v, 3) for k, v in cpu.items()},
                     round(100 * busy / total, 1) if total else None)


# Before a measurement, the processes measured (not the machine: it may be shared) should
# have finished what earlier load left them (locust's backlog, the feed fan-out of posts
# written): at most this share of one core over a short window, waited for up to a limit.
QUIET_CORE_FRACTION = 0.10


def wait_quiet(meter: CpuMeter, groups: Iterable[str], window: float = 0.5,
               timeout: float = 15.0, quiet_fraction: float = QUIET_CORE_FRACTION) -> float:
    """Waits until ``groups`` use at most ``quiet_fraction`` of a core over ``window``;
    returns the seconds waited (``timeout`` or a little more if they never did)."""
    groups = list(groups)
    started = time.monotonic()
    while True:
        before = meter.snapshot()
        time.sleep(window)
        usage = meter.delta(before, meter.snapshot())
        waited = time.monotonic() - started
        if usage.total(groups) <= quiet_fraction * usage.seconds or waited >= timeout:
            return round(waited, 1)
