"""Settings, read once from the environment (``PULSE_*``) and passed to ``create_app``.

Every tunable lives here with a sane default. ``Settings.from_env()`` is the only
place that reads ``os.environ``; tests build ``Settings(...)`` directly.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

# The four store variables: all set (external stores) or none set (embedded stores).
STORE_VARS = ("PULSE_POSTGRES_DSN", "PULSE_MONGO_URL", "PULSE_REDIS_URL", "PULSE_AMQP_URL")


class ConfigError(ValueError):
    """The environment describes an impossible configuration."""


def _env(name: str) -> str:
    return "PULSE_" + name.upper()


@dataclass(frozen=True)
class Settings:
    # Stores. ``None`` for all four means "start embedded stores" (see storage/embedded).
    postgres_dsn: str | None = None
    # Reads that tolerate replication lag (feeds, others' profiles, post lists) go here.
    postgres_replica_dsn: str | None = None
    mongo_url: str | None = None
    mongo_db: str = "pulse"
    redis_url: str | None = None
    # ``None`` with the other stores set is refused; in embedded mode events are
    # dispatched in-process instead of through RabbitMQ.
    amqp_url: str | None = None
    amqp_exchange: str = "pulse.events"
    # Seconds between reconnection attempts of the robust AMQP connection.
    amqp_reconnect_seconds: float = 2.0
    # A publish not confirmed by the broker within this time counts as failed (row kept).
    amqp_publish_timeout_seconds: float = 5.0
    # Unacknowledged deliveries a consumer holds at once.
    amqp_prefetch: int = 16

    # Event bus: the outbox relay wakes on NOTIFY, and polls as a fallback.
    outbox_poll_seconds: float = 1.0
    outbox_batch_size: int = 100
    # A failing handler is retried this many times in all, then dead-lettered.
    event_max_attempts: int = 5
    event_retry_delay_ms: int = 1000
    # Published outbox rows and processed-event records are kept this long, then pruned.
    event_retention_days: float = 7.0

    # HTTP server.
    host: str = "127.0.0.1"
    port: int = 8080
    # `pulse worker` serves /metrics and /healthz (nothing else) on this port, on ``host``;
    # 0: no HTTP at all.
    worker_metrics_port: int = 0
    data_dir: str = ".pulse-data"
    # Distinguishes instances in logs, metrics and presence records.
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Prefix of every Redis key and pub/sub channel: lets several deployments (or test
    # runs) share one Redis server without seeing each other's traffic.
    namespace: str = "pulse"
    log_level: str = "INFO"
    # ``pulse serve`` also runs the outbox relay and event consumers in-process.
    run_workers: bool = True
    # Apply pending migrations when the app starts (safe with several instances).
    migrate_on_start: bool = True

    # PostgreSQL pool (design note: max 20, idle 30 s, connect 2 s, statement 2 s).
    pg_pool_min: int = 1
    pg_pool_max: int = 20
    pg_idle_seconds: float = 30.0
    pg_connect_timeout_seconds: float = 2.0
    pg_statement_timeout_ms: int = 2000
    # A request waiting longer than this for a pooled connection gets 503.
    pg_acquire_timeout_seconds: float = 2.0
    # Lag-tolerant reads leave the replica while it is further behind the primary than this
    # (design note: replication lag < 100 ms), and come back when it has caught up.
    pg_replica_max_lag_ms: int = 100
    # How often the replica's lag is measured, and how old a measurement may be before the
    # replica counts as lagging (a monitor that cannot reach it must not keep it in use).
    pg_replica_lag_interval_ms: int = 50
    pg_replica_lag_stale_ms: int = 1000
    mongo_timeout_ms: int = 2000
    # Where reads that tolerate staleness go (notification lists, history pages older than
    # the newest): primary, primaryPreferred, secondary, secondaryPreferred or nearest.
    # Membership checks, idempotency look-ups and read positions always read the primary.
    mongo_read_preference: str = "primary"
    # With a non-primary preference: skip secondaries further behind than this (MongoDB
    # requires at least 90; -1 for no limit).
    mongo_max_staleness_seconds: int = -1
    # How often the replica set's lag (replSetGetStatus) is sampled for /metrics.
    mongo_replica_lag_interval_seconds: float = 5.0
    redis_timeout_seconds: float = 1.0
    redis_pool_max: int = 64
    readiness_timeout_seconds: float = 1.0

    # Auth.
    session_ttl_seconds: int = 30 * 24 * 3600
    session_cache_ttl_seconds: int = 300
    profile_cache_ttl_seconds: int = 300
    # In-process near-caches of sessions and profiles (storage/near_cache.py), per cache:
    # at most this many entries (0: none), each kept at most this long. An entry is used
    # only while the invalidation channel was confirmed within the lease, so a session
    # revoked or a profile changed on any instance is never served from here for longer.
    near_cache_entries: int = 10_000
    near_cache_ttl_seconds: float = 60.0
    near_cache_lease_seconds: float = 0.5
    # argon2id cost; defaults are argon2-cffi's RFC 9106 "low memory" profile.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # Hashes and verifications run on a pool of their own (each holds argon2_memory_kib
    # while it runs); past this many jobs waiting for a thread, 503 with Retry-After at once.
    password_hash_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    password_hash_queue_max: int = 128

    # Rate limits. ``PULSE_RATE_LIMITS=off`` disables all of them (benchmarks).
    rate_limits: bool = True
    login_failures_per_account: int = 10
    login_failures_per_address: int = 50
    login_failure_window_seconds: int = 15 * 60
    # Registration attempts per client address (each costs a password hash).
    registrations_per_address_per_hour: int = 20
    requests_per_token_per_minute: int = 6000
    # How often each instance adds its per-token request counts to the shared window
    # (0: on every request, exact across instances at a Redis round trip per request).
    request_limit_sync_seconds: float = 1.0
    # Client socket events per user per 10 s, counted across all of the user's sockets on
    # every instance (Redis): message:send, message:read, typing, presence:query.
    socket_sends_per_10_seconds: int = 100
    socket_reads_per_10_seconds: int = 200
    socket_typing_per_10_seconds: int = 100
    socket_presence_queries_per_10_seconds: int = 50

    # Behind a reverse proxy (compose's nginx), take the client address from the last
    # X-Forwarded-For hop the proxy appended; never enable when clients reach Pulse directly.
    trust_forwarded_for: bool = False

    # Body limit for JSON requests (contract: 64 KiB).
    max_json_bytes: int = 64 * 1024

    # Privacy.
    erasure_recovery_days: float = 30.0
    # Keyed hash for pseudonymised audit entries; must be set (and kept) in production.
    audit_key: str = field(default_factory=lambda: secrets.token_hex(32))
    # Signs list cursors (HMAC) so only cursors this deployment issued are accepted; every
    # instance needs the same one. Empty: derived from audit_key, which they share already.
    cursor_key: str = ""
    notification_ttl_days: int = 180
    # Likes of a post, comments on a post and new followers arriving within this many
    # seconds of the first are one notification (API.md "Grouped notifications").
    notification_group_seconds: int = 3600
    # notification:new for a group goes out at most once per this many ms, across
    # instances (the last change of a burst always goes out). 0: every change at once.
    notification_push_coalesce_ms: int = 1000
    # A group pushed in consecutive windows doubles its window each time, up to this (a
    # viral post's author gets a push every few seconds, not every second); quiet for
    # twice its window, it is back to notification_push_coalesce_ms.
    notification_push_coalesce_max_ms: int = 8000
    # A purge step failing this many times marks its saga stuck (reported; still retried).
    purge_max_attempts: int = 5
    # The privacy worker (purges, retention) runs this often when workers run.
    privacy_worker_interval_seconds: float = 300.0

    # Feeds.
    feed_max_items: int = 800
    # A feed nobody reads or writes for this long is evicted (rebuilt on the next read).
    feed_ttl_seconds: int = 7 * 24 * 3600
    # Hybrid fan-out: an author with more followers than this is no longer fanned out on
    # write; followers' feed reads merge their recent posts (kept per author in Redis).
    fanout_push_max_followers: int = 10000
    # ... and is fanned out on write again once down to this many followers (hysteresis:
    # an author hovering around the threshold crosses it once, not on every follow).
    # None: 90 % of fanout_push_max_followers.
    fanout_push_resume_followers: int | None = None
    popular_window_hours: int = 48
    # How many posts /posts/popular ranks, and how long the Redis set is trusted before
    # it is rebuilt from PostgreSQL (likes keep it current in between).
    popular_max_posts: int = 200
    popular_rebuild_seconds: int = 600

    # Messaging: a conversation's unread count looks at most this many of its newest
    # messages (kept on the conversation, so listing conversations runs no count).
    unread_count_max: int = 100
    # Conversation members kept in each instance for sends and typing (invalidated over the
    # fan-out channel when they change; these bound it whatever happens). 0 entries: off.
    membership_cache_entries: int = 10_000
    membership_cache_seconds: float = 60.0

    # Real time.
    offset_log_max_events: int = 1000
    offset_log_max_age_seconds: int = 24 * 3600
    presence_ttl_seconds: int = 15
    # Engine.IO heartbeat, as announced in the handshake (milliseconds, sub-second allowed).
    socket_ping_interval_ms: int = 25000
    socket_ping_timeout_ms: int = 20000
    # Engine.IO maxPayload: the largest websocket message or polling POST body accepted.
    socket_max_payload_bytes: int = 1_000_000
    # An Engine.IO session that has not connected a namespace by then is closed.
    socket_connect_timeout_ms: int = 45000
    # Engine.IO sessions one client address may hold open before their Socket.IO CONNECT
    # (per instance: each instance bounds its own memory).
    socket_pending_per_address: int = 32
    # A user's sockets across all instances (API.md v1.1); beyond it ``too_many_sockets``.
    # 0: no cap. Each socket's slot lives presence_ttl_seconds past its instance's last beat.
    sockets_per_user: int = 20
    # Client events of one socket whose handlers run at once, and how many more wait (in
    # order) for one of those to finish; one beyond both is refused with a 429 ack (the
    # socket stays open).
    socket_max_inflight_events: int = 8
    socket_max_queued_events: int = 32
    # Unsent bytes (written by Pulse, not yet taken by the kernel) one socket may have, and
    # all sockets of an instance together: past either, the slowest socket is dropped at
    # the transport level (it reconnects and resumes from its offset).
    socket_max_buffered_bytes: int = 1024 * 1024
    instance_max_buffered_bytes: int = 256 * 1024 * 1024
    # Each instance re-checks the sessions of its sockets this often: a logged-out, expired
    # or erased session's sockets are disconnected even if the fan-out message was lost.
    socket_session_check_seconds: float = 2.0

    @property
    def fanout_resume_followers(self) -> int:
        """The follower count at or below which a large author is fanned out on write again."""
        if self.fanout_push_resume_followers is not None:
            return min(self.fanout_push_resume_followers, self.fanout_push_max_followers)
        return self.fanout_push_max_followers * 9 // 10

    @property
    def embedded(self) -> bool:
        """True when no store is configured: `make run` starts embedded stores."""
        return not any((self.postgres_dsn, self.mongo_url, self.redis_url, self.amqp_url))

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Environment variable name for each setting (``PULSE_`` + upper-case field)."""
        return {f.name: _env(f.name) for f in fields(cls)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(_env(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check_stores()
        return settings

    def check_stores(self) -> None:
        """All four stores configured, or none: a half-configured deployment is refused."""
        given = {
            "PULSE_POSTGRES_DSN": self.postgres_dsn,
            "PULSE_MONGO_URL": self.mongo_url,
            "PULSE_REDIS_URL": self.redis_url,
            "PULSE_AMQP_URL": self.amqp_url,
        }
        missing = [name for name, value in given.items() if not value]
        if missing and len(missing) != len(given):
            raise ConfigError(
                "some stores are configured but not all; missing: " + ", ".join(missing)
                + " (set all four, or none to run with embedded stores)"
            )

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if f.name == "rate_limits":
        return raw.strip().lower() not in ("off", "0", "false", "no")
    if kind.startswith("bool"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind.startswith("int"):
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{_env(f.name)} must be an integer, got {raw!r}") from exc
    if kind.startswith("float"):
        try:
            return float(raw)
        except ValueError as exc:
            raise ConfigError(f"{_env(f.name)} must be a number, got {raw!r}") from exc
    return raw
