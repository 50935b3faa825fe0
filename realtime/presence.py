"""``server.services.ports.Presence``: online = at least one socket on any live instance.

This instance counts its sockets per user and writes a user into its presence set on
the first socket and out of it after the last one; a heartbeat keeps the records alive
(and rewrites them if Redis lost them), so they vanish within ``presence_ttl_seconds``
of the instance dying without cleanup.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from kernel.tasks import cancel_and_wait
from storage.redis.client import RedisUnavailable
from storage.redis.presence import PresenceStore

log = logging.getLogger("pulse.realtime.presence")


class InstancePresence:
    def __init__(self, store: PresenceStore, instance_id: str) -> None:
        self.store = store
        # Unique per process start: two instances configured with the same id (or a
        # restart reusing it) must never share or delete each other's records.
        self.instance = f"{instance_id}:{uuid.uuid4().hex[:8]}"
        self.sockets_per_user: dict[str, int] = {}
        self._heartbeat: asyncio.Task | None = None

    @property
    def heartbeat_interval(self) -> float:
        return max(0.2, self.store.ttl / 3)

    async def online(self, user_ids: list[str]) -> list[str]:
        found = await self.store.online(list(dict.fromkeys(user_ids)))
        return [u for u in dict.fromkeys(user_ids) if u in found]

    async def socket_opened(self, user_id: str) -> None:
        count = self.sockets_per_user.get(user_id, 0) + 1
        self.sockets_per_user[user_id] = count
        if count == 1:
            await self._sync(user_id)

    async def socket_closed(self, user_id: str) -> None:
        count = self.sockets_per_user.get(user_id, 0) - 1
        if count > 0:
            self.sockets_per_user[user_id] = count
            return
        self.sockets_per_user.pop(user_id, None)
        await self._sync(user_id)

    async def _sync(self, user_id: str) -> None:
        """Writes the user's local state; writes again if it changed meanwhile (a
        connect and a disconnect may otherwise land in Redis in the wrong order)."""
        for _ in range(3):
            here = user_id in self.sockets_per_user
            try:
                if here:
                    await self.store.add_users(self.instance, [user_id])
                else:
                    await self.store.remove_user(self.instance, user_id)
            except RedisUnavailable as exc:
                log.warning("presence not written for now (%s); the heartbeat will catch up", exc)
                return
            if (user_id in self.sockets_per_user) == here:
                return

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="pulse-presence-heartbeat")

    async def _beat(self) -> None:
        while True:
            try:
                if not await self.store.heartbeat(self.instance) and self.sockets_per_user:
                    await self.store.add_users(self.instance, list(self.sockets_per_user))
            except RedisUnavailable as exc:
                log.warning("presence heartbeat failed (%s)", exc)
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any single failure
                log.exception("presence heartbeat failed")
            await asyncio.sleep(self.heartbeat_interval)

    async def stop(self) -> None:
        await cancel_and_wait(self._heartbeat)
        self._heartbeat = None
        try:
            await self.store.remove_instance(self.instance)
        except RedisUnavailable as exc:
            log.warning("presence records not removed (%s); they expire on their own", exc)
