"""Every piece of application state, under a typed key. The one module that declares them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.read_preferences import _ServerMode

    from kernel.settings import Settings
    from realtime.server import RealtimeServer
    from server.bus.bus import EventBus
    from server.metrics import Metrics
    from server.services import Services
    from server.services.ports import Presence, Pusher, RealtimeErasure
    from storage.near_cache import NearCaches
    from storage.postgres.pool import Database

ReadinessCheck = Callable[[], Awaitable[None]]

SETTINGS: web.AppKey["Settings"] = web.AppKey("settings")
METRICS: web.AppKey["Metrics"] = web.AppKey("metrics")
DB: web.AppKey["Database"] = web.AppKey("db")
MONGO_CLIENT: web.AppKey["AsyncMongoClient"] = web.AppKey("mongo_client")
MONGO_DB: web.AppKey["AsyncDatabase"] = web.AppKey("mongo_db")
# The read preference of MongoDB reads that tolerate staleness (PULSE_MONGO_READ_PREFERENCE).
MONGO_STALE_READS: web.AppKey["_ServerMode"] = web.AppKey("mongo_stale_reads")
REDIS: web.AppKey["aioredis.Redis"] = web.AppKey("redis")
# The instance's near-caches (sessions, profiles): filled by the Redis caches, invalidated
# through the fan-out listener.
NEAR_CACHES: web.AppKey["NearCaches"] = web.AppKey("near_caches")
SERVICES: web.AppKey["Services"] = web.AppKey("services")
EVENT_BUS: web.AppKey["EventBus"] = web.AppKey("event_bus")
# Store name -> coroutine that raises when the store does not answer (for /readyz).
READINESS_CHECKS: web.AppKey[dict[str, ReadinessCheck]] = web.AppKey("readiness_checks")
# Socket.IO server (attached in create_app); Pusher and Presence (realtime_ctx) are
# what the services use to reach sockets, set before services_ctx runs.
REALTIME: web.AppKey["RealtimeServer"] = web.AppKey("realtime")
PUSHER: web.AppKey["Pusher"] = web.AppKey("pusher")
PRESENCE: web.AppKey["Presence"] = web.AppKey("presence")
# The real-time layer's erasure steps (its replay logs and presence records), gathered
# with the contexts' by services_ctx.
REALTIME_ERASURE: web.AppKey["RealtimeErasure"] = web.AppKey("realtime_erasure")
# Stores the app can do without (a read replica): /readyz reports them as "degraded", still 200.
OPTIONAL_READINESS_CHECKS: web.AppKey[dict[str, ReadinessCheck]] = web.AppKey("optional_readiness_checks")
