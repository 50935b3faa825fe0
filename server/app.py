"""``create_app(settings)``: the one place the application is assembled."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from aiohttp import web

from api.http import client_info
from api.middleware import install_log_filters, request_middleware, send_request_id
from api.routes import setup_routes
from kernel.cursors import Cursors
from kernel.settings import Settings
from kernel.tasks import cancel_and_wait
from realtime.asyncapi import build_asyncapi
from realtime.erasure import RedisRealtimeErasure
from realtime.fanout import FanoutListener, RedisPusher
from realtime.presence import InstancePresence
from realtime.socket_cap import SocketCap
from realtime.server import RealtimeServer
from server import appkeys
from server.bus.bus import EventBus
from server.metrics import Metrics
from server.security import Passwords
from server.services import Services
from server.services.events import EventsService
from server.services.feed import FeedService
from server.services.membership_cache import MembershipCache
from server.services.messaging import MessagingService
from server.services.notifications import NotificationsService
from server.services.posts import PostsService
from server.services.presence import PresenceService
from server.services.privacy import AuditTrail, PrivacyService
from server.services.rate_limits import RateLimits
from server.services.social import SocialService
from server.services.users import UsersService
from storage.mongo.client import (CommandTimer, ReplicaSetLag, create_mongo, ensure_indexes,
                                  ensure_indexes_until_done, stale_read_preference)
from storage.near_cache import PROFILES, SESSIONS, UNREAD_COUNTS, NearCaches
from storage.postgres.migrate import apply_migrations
from storage.postgres.pool import Database
from storage.redis.client import Keys, create_redis
from storage.redis.offset_log import OffsetLogStore
from storage.redis.feeds import FeedCache
from storage.redis.notification_push import PushWindowStore
from storage.redis.popular import PopularPostsCache
from storage.redis.presence import PresenceStore
from storage.redis.privacy import RedisErasure
from storage.redis.profile_cache import ProfileCache
from storage.redis.rate_limit import RateLimitStore
from storage.redis.socket_slots import SocketSlotStore
from storage.redis.sessions_cache import SessionsCache
from storage.redis.unread_counts import UnreadCountCache
from storage.redis.write_marks import WriteMarkStore

log = logging.getLogger("pulse.app")


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    if settings.migrate_on_start:
        await apply_migrations(settings.postgres_dsn)
    db = await Database.connect(settings)
    app[appkeys.DB] = db
    app[appkeys.METRICS].watch_pool(db.pool_stats)
    app[appkeys.METRICS].watch_reads(db.read_stats, db.replica_lag)

    async def ping() -> None:
        async with db.connection() as conn:
            await conn.fetchval("SELECT 1")

    app[appkeys.READINESS_CHECKS]["postgres"] = ping
    if settings.postgres_replica_dsn:
        # Reported, never failing: without the replica, lag-tolerant reads go to the primary.
        app[appkeys.OPTIONAL_READINESS_CHECKS]["postgres_replica"] = db.ping_replica
        # Behind by more than PULSE_PG_REPLICA_MAX_LAG_MS: lag-tolerant reads use the primary.
        app[appkeys.OPTIONAL_READINESS_CHECKS]["postgres_replica_lag"] = db.check_replica_lag
    yield
    await db.close()


async def mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    app[appkeys.MONGO_STALE_READS] = stale_read_preference(settings)  # refuses a bad setting at start
    client, db = create_mongo(settings, listeners=[CommandTimer(app[appkeys.METRICS].observe_mongo_command)])
    app[appkeys.MONGO_CLIENT] = client
    app[appkeys.MONGO_DB] = db
    replica_lag = ReplicaSetLag(client, settings.mongo_replica_lag_interval_seconds)
    app[appkeys.METRICS].watch_mongo_replica_lag(lambda: replica_lag.members)
    replica_lag.start()
    retry: asyncio.Task | None = None
    try:
        await ensure_indexes(db, settings)
    except Exception as exc:  # noqa: BLE001 - MongoDB down must not stop the REST API
        log.warning("MongoDB unavailable at start (%s); chat and notifications answer 503 until it is back", exc)
        retry = asyncio.create_task(ensure_indexes_until_done(db, settings))

    async def ping() -> None:
        await client.admin.command("ping")

    app[appkeys.READINESS_CHECKS]["mongo"] = ping
    yield
    if retry is not None:
        retry.cancel()
    await replica_lag.stop()
    await client.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = create_redis(app[appkeys.SETTINGS])
    app[appkeys.REDIS] = redis

    async def ping() -> None:
        await redis.ping()

    app[appkeys.READINESS_CHECKS]["redis"] = ping
    yield
    await redis.aclose()


async def realtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Socket.IO server's Redis transport: offset log, fan-out listener, presence
    heartbeat, socket cap; provides PUSHER, PRESENCE and REALTIME_ERASURE for the
    services (so it runs before services_ctx)."""
    settings = app[appkeys.SETTINGS]
    redis = app[appkeys.REDIS]
    keys = Keys(settings.namespace)
    realtime = app[appkeys.REALTIME]
    offset_log = OffsetLogStore(redis, keys, settings.offset_log_max_events, settings.offset_log_max_age_seconds)
    presence_store = PresenceStore(redis, keys, settings.presence_ttl_seconds)
    presence = InstancePresence(presence_store, settings.instance_id)
    listener = FanoutListener(settings, keys, realtime.deliver, realtime.catch_up,
                              near_caches=app[appkeys.NEAR_CACHES])
    cap = SocketCap(SocketSlotStore(redis, keys, settings.presence_ttl_seconds), presence.instance,
                    settings.sockets_per_user)
    realtime.start(offset_log, presence, listener, cap)
    app[appkeys.PUSHER] = RedisPusher(offset_log)
    app[appkeys.PRESENCE] = presence
    app[appkeys.REALTIME_ERASURE] = RedisRealtimeErasure(offset_log, presence_store)
    listener.start()
    presence.start()
    cap.start()
    if not await listener.wait_subscribed(timeout=5 * settings.redis_timeout_seconds):
        log.warning("fan-out not subscribed yet (Redis unavailable?); live events reach other instances once it is")
    yield
    await listener.stop()
    await presence.stop()
    await cap.stop()


async def sockets_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sockets are served once the services exist (their handlers call them), and closed
    while the services and the transport are still up."""
    realtime = app[appkeys.REALTIME]
    realtime.serve(app[appkeys.SERVICES])
    yield
    await realtime.disconnect_all()  # normally done already by on_shutdown


async def _close_sockets(app: web.Application) -> None:
    # On shutdown, before aiohttp waits for open connections: clients reconnect elsewhere.
    await app[appkeys.REALTIME].disconnect_all()


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    redis = app[appkeys.REDIS]
    keys = Keys(settings.namespace)
    passwords = await asyncio.get_running_loop().run_in_executor(None, Passwords, settings)
    rate_limits = RateLimits(RateLimitStore(redis, keys), settings)
    near = app[appkeys.NEAR_CACHES]
    app[appkeys.DB].track_writes(WriteMarkStore(redis, keys))
    audit = AuditTrail(app[appkeys.DB], settings)
    users = UsersService(
        app[appkeys.DB], SessionsCache(redis, keys, near=near.cache(SESSIONS, key_of=bytes.fromhex)),
        ProfileCache(redis, keys, settings.profile_cache_ttl_seconds, near=near.cache(PROFILES),
                     near_own=near.cache(PROFILES)),
        rate_limits, passwords, settings, redis_erasure=RedisErasure(redis, keys), pusher=app[appkeys.PUSHER],
        audit=audit,
    )
    # One key for the whole deployment: a cursor issued by any instance pages on any other.
    cursors = Cursors.from_settings(settings)
    posts = PostsService(app[appkeys.DB], users, PopularPostsCache(redis, keys), settings, cursors=cursors)
    social = SocialService(app[appkeys.DB], users, cursors=cursors)
    feed = FeedService(
        FeedCache(redis, keys, max_items=settings.feed_max_items, ttl_seconds=settings.feed_ttl_seconds),
        social, posts, db=app[appkeys.DB], max_items=settings.feed_max_items, cursors=cursors,
        push_max_followers=settings.fanout_push_max_followers, resume_followers=settings.fanout_resume_followers,
    )
    events = EventsService(app[appkeys.DB], users, cursors=cursors)
    stale_reads = app[appkeys.MONGO_STALE_READS]
    notifications = NotificationsService(
        app[appkeys.MONGO_DB], users, pusher=app[appkeys.PUSHER], stale_reads=stale_reads, cursors=cursors,
        group_seconds=settings.notification_group_seconds,
        push_windows=(PushWindowStore(redis, keys, settings.notification_push_coalesce_ms,
                                      settings.notification_push_coalesce_max_ms)
                      if settings.notification_push_coalesce_ms > 0 else None),
        unread_counts=UnreadCountCache(redis, keys, near.cache(UNREAD_COUNTS)),
    )
    listener = app[appkeys.REALTIME].listener
    membership = None
    if listener is not None and settings.membership_cache_entries > 0:
        # Trusted while the channel that announces membership changes is up (see the cache).
        membership = MembershipCache(lambda: listener.subscriptions if listener.subscribed.is_set() else None,
                                     max_entries=settings.membership_cache_entries,
                                     ttl_seconds=settings.membership_cache_seconds)
    messaging = MessagingService(app[appkeys.MONGO_DB], users, notifications, pusher=app[appkeys.PUSHER],
                                 presence=app[appkeys.PRESENCE], stale_reads=stale_reads, cursors=cursors,
                                 unread_count_max=settings.unread_count_max, membership=membership,
                                 push_retry_seconds=settings.offset_log_max_age_seconds)
    realtime_erasure = app[appkeys.REALTIME_ERASURE]
    # Each context's erasure steps, in the order the purge saga runs them (before the
    # users row goes, its final step): the feed before the follows (the followers say
    # whose feeds hold the user's posts), the large accounts' fan-out modes after them
    # (their counts are final); the replay logs before messaging and notifications (their
    # members and recipients say whose logs hold events about the user); the account's
    # own traces last. A step's ``before`` is checked at start.
    erasure_steps = [
        *feed.erasure_steps(), *posts.erasure_steps(), *social.erasure_steps(), *feed.erasure_steps_after_follows(),
        *events.erasure_steps(),
        *realtime_erasure.erasure_steps(told_about=[messaging.users_told_about, notifications.users_told_about]),
        *messaging.erasure_steps(), *notifications.erasure_steps(), *users.erasure_steps(),
    ]
    # The export document's sections after the account, its sessions and the audit trail.
    export_sections = [
        *posts.export_sections(), *social.export_sections(), *events.export_sections(),
        *messaging.export_sections(), *notifications.export_sections(),
    ]
    privacy = PrivacyService(app[appkeys.DB], audit, users, settings, erasure_steps=erasure_steps,
                             export_sections=export_sections)
    services = Services(users=users, rate_limits=rate_limits, posts=posts, social=social, feed=feed,
                        events=events, notifications=notifications, messaging=messaging, privacy=privacy,
                        presence=PresenceService(app[appkeys.PRESENCE], social, messaging))
    app[appkeys.SERVICES] = services
    yield
    await messaging.close()  # sends in flight finish their writes
    await notifications.stop()
    passwords.close()


async def privacy_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """Due purges and retention, periodically (one run at a time across instances)."""
    settings = app[appkeys.SETTINGS]
    if not settings.run_workers:
        yield
        return
    privacy = app[appkeys.SERVICES].privacy

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.privacy_worker_interval_seconds)
            try:
                await privacy.run_periodic()
            except Exception:  # noqa: BLE001 - a store outage must not end the loop
                log.exception("privacy worker pass failed; retrying next interval")

    task = asyncio.create_task(loop(), name="privacy-worker")
    yield
    await cancel_and_wait(task)


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """The outbox relay and the event consumers (when this process runs workers)."""
    settings = app[appkeys.SETTINGS]
    services = app[appkeys.SERVICES]
    # Each context's consumers (a name that never changes, the event types, an idempotent
    # handler); the bus knows none of the services.
    consumers = [*services.posts.consumers(), *services.feed.consumers(), *services.notifications.consumers()]
    bus = EventBus(app[appkeys.DB], settings, consumers, app[appkeys.METRICS])
    app[appkeys.EVENT_BUS] = bus
    if bus.broker is not None:
        app[appkeys.READINESS_CHECKS]["rabbitmq"] = bus.broker.check
    await bus.start(run_workers=settings.run_workers)
    yield
    await bus.stop()


def create_app(settings: Settings) -> web.Application:
    # Bodies above the JSON limit are refused (413) before they are read into memory.
    app = web.Application(
        middlewares=[request_middleware], client_max_size=settings.max_json_bytes,
    )
    app.on_response_prepare.append(send_request_id)
    install_log_filters()
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = Metrics()
    app[appkeys.NEAR_CACHES] = NearCaches(max_entries=settings.near_cache_entries,
                                          ttl_seconds=settings.near_cache_ttl_seconds,
                                          lease_seconds=settings.near_cache_lease_seconds)
    app[appkeys.READINESS_CHECKS] = {}
    app[appkeys.OPTIONAL_READINESS_CHECKS] = {}
    app.cleanup_ctx.extend([postgres_ctx, mongo_ctx, redis_ctx, realtime_ctx, services_ctx, sockets_ctx,
                            events_ctx, privacy_worker_ctx])
    setup_routes(app, asyncapi_document=build_asyncapi)
    realtime = RealtimeServer(settings, app[appkeys.METRICS],
                              client_address=lambda request: client_info(request).address)
    realtime.attach(app)  # Socket.IO at /socket.io
    app[appkeys.REALTIME] = realtime
    app.on_shutdown.append(_close_sockets)
    return app
