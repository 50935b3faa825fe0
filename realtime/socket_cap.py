"""The per-user socket cap across instances (``sockets_per_user``; API.md v1.1):
this instance's claims on the shared slots, kept alive by a heartbeat."""
from __future__ import annotations

import asyncio
import logging

from kernel.tasks import cancel_and_wait
from storage.redis.client import RedisUnavailable
from storage.redis.socket_slots import SocketSlotStore

log = logging.getLogger("pulse.realtime.socket_cap")


class SocketCap:
    def __init__(self, store: SocketSlotStore, instance: str, cap: int) -> None:
        self.store = store
        self.instance = instance
        self.cap = cap
        self.members_by_user: dict[str, set[str]] = {}
        self._heartbeat: asyncio.Task | None = None

    def _member(self, sid: str) -> str:
        return f"{self.instance}:{sid}"

    async def claim(self, user_id: str, sid: str) -> bool:
        """True if the socket may open (and it now holds a slot until ``release``)."""
        if self.cap <= 0:
            return True
        member = self._member(sid)
        try:
            claimed = await self.store.claim(user_id, member, self.cap)
        except RedisUnavailable as exc:  # fail open: an outage must not lock everyone out
            log.warning("socket cap not checked (%s)", exc)
            claimed = True
        if claimed:
            self.members_by_user.setdefault(user_id, set()).add(member)
        return claimed

    async def release(self, user_id: str, sid: str) -> None:
        member = self._member(sid)
        members = self.members_by_user.get(user_id)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self.members_by_user[user_id]
        try:
            await self.store.release(user_id, member)
        except RedisUnavailable as exc:
            log.warning("socket slot not released (%s); it expires on its own", exc)

    def start(self) -> None:
        if self.cap > 0:
            self._heartbeat = asyncio.create_task(self._beat(), name="pulse-socket-cap-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.store.ttl / 3))
            try:
                if self.members_by_user:
                    await self.store.refresh({u: list(m) for u, m in self.members_by_user.items()})
            except RedisUnavailable as exc:
                log.warning("socket slots not refreshed (%s)", exc)
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any single failure
                log.exception("socket slots not refreshed")

    async def stop(self) -> None:
        await cancel_and_wait(self._heartbeat)
        self._heartbeat = None
