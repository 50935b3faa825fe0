"""Cross-instance fan-out: the ``Pusher`` the services use, and the channel listener
that hands every instance the events for the sockets it holds.

The listener owns its own Redis connection (no silent reconnects from the client
library): any error or a missed pong ends the subscription, it reconnects with backoff
and resubscribes, and tells the server that events may have been missed meanwhile so
the sockets catch up from the offset log. python-socketio's AsyncRedisManager is not
used: its listener is known to die silently after a Redis restart.

The same channel invalidates the instance's near-caches (``storage.near_cache``): the
listener applies their messages, confirms the channel with a ping every third of their
lease (a pong answers everything published before its ping), and flushes them whenever
the subscription is lost or made anew.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kernel.errors import StoreUnavailable
from kernel.settings import Settings
from kernel.tasks import cancel_and_wait
from server.services.ports import Push
from storage.redis.client import REDIS_UNAVAILABLE, Keys, RedisUnavailable
from storage.redis.offset_log import OffsetLogStore

log = logging.getLogger("pulse.realtime.fanout")

@dataclass(frozen=True)
class FanoutMessage:
    event: str
    data_json: bytes
    offsets: dict[str, str] | None  # user id -> offset, for logged events
    user_ids: list[str]  # the recipients


def decode_message(raw: bytes) -> FanoutMessage:
    header_json, _, data_json = raw.partition(b"\n")
    header = orjson.loads(header_json)
    offsets = header.get("o")
    if offsets is not None:
        return FanoutMessage(header["e"], data_json, offsets, list(offsets))
    return FanoutMessage(header["e"], data_json, None, header["u"])


class ChannelWatcher(Protocol):
    """What else the channel serves: the instance's near-caches (``storage.near_cache.
    NearCaches``), which take their own messages and must know the channel's state."""

    event: str  # the event of its messages (they name no recipient: no socket gets them)
    enabled: bool
    confirm_interval: float  # seconds between pings that confirm the channel

    def apply(self, data_json: bytes) -> None: ...
    def subscribed(self, sent_at: float) -> None: ...
    def confirmed(self, sent_at: float) -> None: ...
    def lost(self) -> None: ...
    def flush(self) -> None: ...


class RedisPusher:
    """``server.services.ports.Pusher``: log (when replayable) and publish to every instance."""

    def __init__(self, offset_log: OffsetLogStore) -> None:
        self.offset_log = offset_log

    async def push(self, user_ids: list[str], event: str, data: dict[str, Any], *, replay: bool = True,
                   once_key: str | None = None) -> None:
        recipients = list(dict.fromkeys(str(u) for u in user_ids))
        if not recipients:
            return
        if "offset" in data:
            data = {k: v for k, v in data.items() if k != "offset"}
        data_json = orjson.dumps(data)
        try:
            if replay:
                await self.offset_log.append_and_publish(recipients, event, data_json, once_key)
            else:
                await self.offset_log.publish_ephemeral(recipients, event, data_json)
        except RedisUnavailable as exc:
            raise StoreUnavailable("redis", "Real-time delivery is unavailable for a moment.") from exc

    async def push_many(self, pushes: list[Push]) -> None:
        events = []
        for push in pushes:
            recipients = list(dict.fromkeys(str(u) for u in push.user_ids))
            if recipients:
                data = {k: v for k, v in push.data.items() if k != "offset"}
                events.append((recipients, push.event, orjson.dumps(data), push.once_key))
        if not events:
            return
        try:
            await self.offset_log.append_and_publish_many(events)
        except RedisUnavailable as exc:
            raise StoreUnavailable("redis", "Real-time delivery is unavailable for a moment.") from exc


class FanoutListener:
    """Subscribes to the fan-out channel for as long as the app runs, whatever Redis does."""

    def __init__(
        self, settings: Settings, keys: Keys,
        deliver: Callable[[FanoutMessage], Awaitable[None]],
        on_resubscribed: Callable[[], Awaitable[None]],
        *, ping_interval: float = 2.0, max_backoff: float = 2.0, near_caches: ChannelWatcher | None = None,
    ) -> None:
        self.settings = settings
        self.channel = keys.fanout_channel().encode()
        self.deliver = deliver
        self.on_resubscribed = on_resubscribed
        self.ping_interval = ping_interval
        self.max_backoff = max_backoff
        self.near_caches = near_caches if near_caches is not None and near_caches.enabled else None
        self.subscribed = asyncio.Event()
        self.subscriptions = 0  # how many times a subscription was established
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pulse-fanout-listener")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def wait_subscribed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.subscribed.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _client(self) -> aioredis.Redis:
        s = self.settings
        # No retries inside redis-py: a broken connection must surface here, where
        # the resubscription and the catch-up happen.
        return aioredis.from_url(
            s.redis_url, socket_connect_timeout=s.redis_timeout_seconds, socket_timeout=s.redis_timeout_seconds,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            client = self._client()
            pubsub = client.pubsub()
            try:
                asked_at = time.monotonic()
                await pubsub.subscribe(self.channel)
                await self._listen(pubsub, asked_at)
            except asyncio.CancelledError:
                raise
            except REDIS_UNAVAILABLE as exc:
                if self.subscribed.is_set():
                    log.warning("fan-out subscription lost (%s); resubscribing", exc)
                else:
                    log.warning("fan-out: cannot subscribe (%s); retrying in %.1fs", exc, backoff)
            except Exception:  # noqa: BLE001 - the listener must outlive any bug in one message
                log.exception("fan-out listener failed; resubscribing")
            finally:
                self.subscribed.clear()
                if self.near_caches is not None:
                    self.near_caches.lost()
                await _close_quietly(pubsub, client)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _listen(self, pubsub: aioredis.client.PubSub, subscribe_asked_at: float) -> None:
        near = self.near_caches
        # With near-caches, pinged on a timetable whatever the traffic: each pong confirms
        # the channel up to its ping (carried in the ping's message).
        ping_every = min(self.ping_interval, near.confirm_interval) if near is not None else self.ping_interval
        last_heard = last_ping = time.monotonic()
        task = asyncio.current_task()
        while True:
            wait = min(1.0, self.ping_interval) if near is None else max(0.0, last_ping + ping_every - time.monotonic())
            message = await pubsub.get_message(timeout=wait)
            if task is not None and task.cancelling():
                # Cancelled while a read timed out: redis-py's read timeout can swallow the
                # cancellation (Python < 3.12), and the listener would never stop.
                raise asyncio.CancelledError
            now = time.monotonic()
            if message is not None:
                last_heard = now
                kind = message["type"]
                if kind == "message":
                    try:
                        decoded = decode_message(message["data"])
                    except (ValueError, KeyError, TypeError):
                        log.error("fan-out: dropped a malformed message")
                        if near is not None:
                            near.flush()  # it may have been an invalidation
                        continue
                    if near is not None and decoded.event == near.event:
                        near.apply(decoded.data_json)
                        continue
                    await self.deliver(decoded)
                elif kind == "pong":
                    if near is not None:
                        try:
                            near.confirmed(float(message["data"]))
                        except (TypeError, ValueError):
                            pass  # not one of ours
                elif kind == "subscribe":
                    self.subscriptions += 1
                    if near is not None:
                        near.subscribed(subscribe_asked_at)
                    self.subscribed.set()
                    log.info("fan-out subscribed to %s", self.channel.decode())
                    if self.subscriptions > 1:
                        # Events published while we were away reached no socket here.
                        await self.on_resubscribed()
                if near is None or now - last_ping < ping_every:
                    continue
            # A half-open connection never errors: ping when idle, give up when the pong is late.
            if now - last_heard > 3 * self.ping_interval:
                raise redis.exceptions.ConnectionError("no answer to ping")
            if now - last_ping >= ping_every:
                last_ping = now
                await pubsub.ping(repr(now))


async def _close_quietly(pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
    for close in (pubsub.aclose, client.aclose):
        try:
            await close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to do
            pass
