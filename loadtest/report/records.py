"""The rows the bench's files hold: locust's per-endpoint statistics, raw samples, pool
and MongoDB timing samples."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EndpointStats:
    type: str
    name: str
    count: int
    failures: int
    avg: float
    p50: float
    p95: float
    p99: float
    max: float
    rps: float

    @property
    def key(self) -> str:
        return f"{self.type} {self.name}"


@dataclass(frozen=True)
class Sample:
    t: float           # seconds since the test started
    type: str
    name: str
    ms: float
    failed: bool


@dataclass(frozen=True)
class PoolSample:
    t: float
    instance: str
    size: float
    in_use: float
    # The most in use at once in the instance's last seconds, and its running count of
    # acquisitions that had to wait because every connection was busy: pressure between two
    # samples is not missed.
    in_use_peak: float = 0.0
    exhausted: float = 0.0

    @property
    def key(self) -> str:
        return self.instance

    @property
    def most_in_use(self) -> float:
        return max(self.in_use, self.in_use_peak)


@dataclass(frozen=True)
class LagSample:
    """A replica's replay lag as the primary reported it (pg_stat_replication.replay_lag) at
    time t; None when the primary showed none: the replica had caught up and no WAL was
    pending (PostgreSQL clears the figure once a standby is idle and caught up)."""
    t: float
    replica: str
    seconds: float | None

    @property
    def key(self) -> str:
        return self.replica


@dataclass(frozen=True)
class MongoOpsSample:
    """Running totals of one instance's MongoDB commands of a kind ("read" or "write"), as
    the driver timed them, at time t."""
    t: float
    instance: str
    kind: str
    count: float
    sum_seconds: float

    @property
    def key(self) -> str:
        return f"{self.instance}/{self.kind}"
