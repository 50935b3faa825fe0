"""Prometheus metrics, one registry per app (several apps may live in one test process)."""
from __future__ import annotations

from bisect import bisect_left
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _PoolCollector:
    def __init__(self, stats: Callable[[], dict[str, int] | None]) -> None:
        self._stats = stats

    def collect(self):
        stats = self._stats()
        if not stats:
            return
        for key in ("size", "in_use", "idle", "max"):
            family = GaugeMetricFamily(f"pulse_pg_pool_{key}", f"PostgreSQL primary pool: {key} connections")
            family.add_metric([], stats[key])
            yield family
        yield GaugeMetricFamily("pulse_pg_pool_in_use_peak", "PostgreSQL primary pool: most connections in "
                                "use at once in the last 10 seconds", value=stats["in_use_peak"])
        yield CounterMetricFamily("pulse_pg_pool_exhausted", "PostgreSQL primary pool: acquisitions that "
                                  "found every connection in use (and waited)", value=stats["exhausted"])


class _ReadsCollector:
    def __init__(self, stats: Callable[[], dict[str, int]],
                 lag: Callable[[], dict[str, dict[str, float]] | None]) -> None:
        self._stats = stats
        self._lag = lag

    def collect(self):
        stats = self._stats()
        reads = CounterMetricFamily("pulse_pg_reads", "PostgreSQL reads by the pool that served them", labels=["pool"])
        for pool in ("primary", "replica"):
            reads.add_metric([pool], stats[f"reads_{pool}"])
        yield reads
        fallbacks = CounterMetricFamily(
            "pulse_pg_replica_fallbacks", "Lag-tolerant reads served by the primary: the replica did not "
            "answer (unavailable), was behind by more than the limit (lagging), or had not replayed the "
            "reader's latest write yet (own_writes)", labels=["reason"])
        for key, value in stats.items():
            if key.startswith("fallbacks_"):
                fallbacks.add_metric([key.removeprefix("fallbacks_")], value)
        yield fallbacks
        lag = self._lag()
        if lag is not None:
            family = GaugeMetricFamily("pulse_pg_replica_lag_seconds", "Seconds the replica is behind the "
                                       "primary: age of the oldest primary WAL position it has not replayed "
                                       "(growing while it cannot be measured)", labels=["replica"])
            measurements = CounterMetricFamily("pulse_pg_replica_lag_measurements", "Replica lag measurements "
                                               "by outcome", labels=["replica", "outcome"])
            for replica, measured in lag.items():
                family.add_metric([replica], measured["seconds"])
                measurements.add_metric([replica, "ok"], measured["measured"])
                measurements.add_metric([replica, "failed"], measured["failed"])
            yield family
            yield measurements


class _HttpCollector:
    """HTTP latency by route and responses by status, counted in plain dicts and written out
    as the Histogram and Counter families they are. prometheus_client's own take a lock per
    bucket and counter and resolve labels on every call: on the request path that cost
    several times a bare aiohttp request. Only the event loop's thread touches these (the
    app observes and /metrics renders there)."""

    def __init__(self) -> None:
        self.bounds = LATENCY_BUCKETS
        # (method, route) -> [count per bucket (the last: above every bound)..., sum of seconds]
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.responses: dict[tuple[str, str, str], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self.latency.get((method, route))
        if series is None:
            series = self.latency[(method, route)] = [0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound >= seconds
        series[-1] += seconds
        key = (method, route, str(status))
        self.responses[key] = self.responses.get(key, 0) + 1

    def collect(self):
        latency = HistogramMetricFamily("pulse_http_request_duration_seconds", "HTTP request latency by route",
                                        labels=["method", "route"])
        for labels, series in self.latency.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*(repr(b) for b in self.bounds), "+Inf"), series[:-1]):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(list(labels), buckets, series[-1])
        yield latency
        responses = CounterMetricFamily("pulse_http_responses", "HTTP responses by route and status",
                                        labels=["method", "route", "status"])
        for labels, count in self.responses.items():
            responses.add_metric(list(labels), count)
        yield responses


class _MongoLagCollector:
    def __init__(self, members: Callable[[], dict[str, float]]) -> None:
        self._members = members

    def collect(self):
        members = self._members()
        if not members:
            return  # not a replica set (or not measured yet): absent, not an error
        family = GaugeMetricFamily("pulse_mongo_replica_lag_seconds", "Seconds a MongoDB replica set member's "
                                   "last applied write is behind the primary's (replSetGetStatus)", labels=["member"])
        for member, seconds in members.items():
            family.add_metric([member], seconds)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = _HttpCollector()
        self.registry.register(self.http)
        self.socket_connections = Gauge(
            "pulse_socketio_connections", "Socket.IO connections held by this instance", registry=self.registry,
        )
        self.socket_malformed_frames = Counter(
            "pulse_socketio_malformed_frames_total", "Client frames outside the Engine.IO/Socket.IO "
            "protocol (each closed its connection), by what was wrong", ["reason"], registry=self.registry,
        )
        self.socket_sessions_refused = Counter(
            "pulse_socketio_sessions_refused_total", "Engine.IO sessions refused or closed before their "
            "Socket.IO CONNECT (too many from one address, connect timeout)", ["reason"], registry=self.registry,
        )
        self.mongo_command_seconds = Histogram(
            "pulse_mongo_command_duration_seconds", "MongoDB data commands as the driver timed them",
            ["kind", "command"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.events_published = Counter(
            "pulse_events_published_total", "Domain events published from the outbox", ["event_type"],
            registry=self.registry,
        )
        self.events_consumed = Counter(
            "pulse_events_consumed_total", "Domain events handled by consumers, by outcome: ok, duplicate "
            "(handled before), retry (failed, will be retried), dead_letter (gave up)", ["consumer", "outcome"],
            registry=self.registry,
        )
        self.outbox_lag_seconds = Histogram(
            "pulse_outbox_lag_seconds", "Domain events: from the outbox insert to its publication by the relay",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=self.registry,
        )
        self.socket_deliveries = Counter(
            "pulse_socketio_deliveries_total", "Server events written to sockets (one per recipient socket)",
            ["event"], registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request (method and route bounded by the caller)."""
        self.http.observe(method, route, status, seconds)

    def observe_mongo_command(self, kind: str, command: str, seconds: float) -> None:
        self.mongo_command_seconds.labels(kind, command).observe(seconds)

    def watch_pool(self, stats: Callable[[], dict[str, int] | None]) -> None:
        self.registry.register(_PoolCollector(stats))

    def watch_reads(self, stats: Callable[[], dict[str, int]],
                    replica_lag: Callable[[], dict[str, dict[str, float]] | None]) -> None:
        self.registry.register(_ReadsCollector(stats, replica_lag))

    def watch_mongo_replica_lag(self, members: Callable[[], dict[str, float]]) -> None:
        self.registry.register(_MongoLagCollector(members))

    def render(self) -> bytes:
        return generate_latest(self.registry)
