"""Statistics of a run: exact percentiles of sample windows, the steady part of each load
step, pool pressure and MongoDB command times between two samples."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from loadtest.report.records import EndpointStats, LagSample, MongoOpsSample, PoolSample, Sample


def exact_percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, rank 1000.
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[rank - 1]


def stats_from_samples(samples: Iterable[Sample], seconds: float) -> list[EndpointStats]:
    """Per-endpoint stats (exact percentiles) of a window of samples."""
    by_key: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        by_key.setdefault((sample.type, sample.name), []).append(sample)
    out = []
    for (type_, name), group in by_key.items():
        times = sorted(s.ms for s in group)
        out.append(EndpointStats(
            type=type_, name=name, count=len(group), failures=sum(s.failed for s in group),
            avg=sum(times) / len(times), p50=exact_percentile(times, 50),
            p95=exact_percentile(times, 95), p99=exact_percentile(times, 99), max=times[-1],
            rps=len(group) / seconds if seconds > 0 else math.nan))
    return out


@dataclass(frozen=True)
class Step:
    index: int
    users: int
    start: float       # steady window, seconds since test start
    end: float


def steady_windows(users: list[int], step_seconds: float, settle_seconds: float) -> list[Step]:
    """The part of each load step after the ramp-up has settled."""
    return [Step(i + 1, u, i * step_seconds + settle_seconds, (i + 1) * step_seconds)
            for i, u in enumerate(users)]


def with_previous(samples: list, start: float, end: float) -> list:
    """The samples inside [start, end) plus, per series (``key``), the last one before start:
    the running totals that the window's increase is counted from."""
    before: dict[str, Any] = {}
    inside = []
    for sample in sorted(samples, key=lambda x: x.t):
        if sample.t < start:
            before[sample.key] = sample
        elif sample.t < end:
            inside.append(sample)
    return list(before.values()) + inside


def pool_pressure(samples: list[PoolSample]) -> tuple[float, str] | None:
    """(utilisation, detail) of the busiest instance over the samples: 1.0 when an acquisition
    had to wait for a busy pool between its first and last sample, else its most in use /
    size. A sample from before the window only provides the starting count of waits."""
    worst: tuple[float, str] | None = None
    for instance in sorted({x.instance for x in samples}):
        mine = sorted((x for x in samples if x.instance == instance and x.size > 0), key=lambda x: x.t)
        if len(mine) < 2:
            continue  # nothing after the starting sample
        waits = mine[-1].exhausted - mine[0].exhausted
        most, size = max(x.most_in_use for x in mine[1:]), max(x.size for x in mine[1:])
        value = 1.0 if waits > 0 else most / size
        if worst is None or value > worst[0]:
            worst = (value, f"max {most:.0f} of {size:.0f} in use, {waits:.0f} waits for a busy pool "
                            f"({instance})")
    return worst


def pool_average_utilisation(samples: list[PoolSample]) -> tuple[float, str] | None:
    """(utilisation, detail) of the busiest instance: the mean of its sampled connections in
    use / pool max, i.e. the share of the pool busy on average over the window. A sample
    from before the window (``with_previous``) only opens it and is left out."""
    worst: tuple[float, str] | None = None
    for instance in sorted({x.instance for x in samples}):
        mine = sorted((x for x in samples if x.instance == instance and x.size > 0), key=lambda x: x.t)
        inside = mine[1:] if len(mine) > 1 else mine
        if not inside:
            continue
        value = sum(x.in_use / x.size for x in inside) / len(inside)
        if worst is None or value > worst[0]:
            worst = (value, f"mean of {len(inside)} samples of in use / max {max(x.size for x in inside):.0f} "
                            f"({instance})")
    return worst


def replication_lag_percentile_ms(samples: list[LagSample], q: float = 99
                                  ) -> tuple[float, str] | None:
    """(ms, detail): the ``q``th percentile of the replicas' sampled replay lag, every
    replica's samples together; a sample without a figure (caught up, idle) counts as 0."""
    if not samples:
        return None
    ordered = sorted((x.seconds or 0.0) * 1000 for x in samples)
    idle = sum(1 for x in samples if x.seconds is None)
    replicas = ", ".join(sorted({x.replica for x in samples}))
    return exact_percentile(ordered, q), (f"{len(samples)} samples of pg_stat_replication.replay_lag "
                                          f"({replicas}), {idle} caught up with none pending, "
                                          f"max {ordered[-1]:.1f} ms")


def mongo_average_ms(samples: list[MongoOpsSample], kind: str) -> tuple[float, int] | None:
    """(average ms, commands) of the commands of ``kind`` between the first and the last
    sample of each instance; None without two samples."""
    seconds = count = 0.0
    for instance in {x.instance for x in samples if x.kind == kind}:
        mine = sorted((x for x in samples if x.kind == kind and x.instance == instance), key=lambda x: x.t)
        if len(mine) >= 2:
            seconds += mine[-1].sum_seconds - mine[0].sum_seconds
            count += mine[-1].count - mine[0].count
    if count <= 0:
        return None
    return seconds / count * 1000, int(count)
