"""In-process stand-ins for the real-time port (server/services/ports.py), to see what
the services push without sockets. The stores behind the services stay real."""
from __future__ import annotations

from kernel.errors import StoreUnavailable


class RecordingPusher:
    """Records every push: (user_ids, event, data)."""

    def __init__(self) -> None:
        self.pushed: list[tuple[list[str], str, dict]] = []
        self.once_keys: set[str] = set()

    async def push(self, user_ids, event, data, *, replay=True, once_key=None) -> None:
        # As the port promises (RedisPusher does it in the offset log's script): a key
        # pushed once delivers nothing more.
        if once_key is not None:
            if once_key in self.once_keys:
                return
            self.once_keys.add(once_key)
        self.pushed.append((list(user_ids), event, data))

    async def push_many(self, pushes) -> None:
        for p in pushes:
            await self.push(p.user_ids, p.event, p.data, once_key=p.once_key)


class FailingOncePusher:
    """The real pusher, except that its next ``push`` of ``event`` (or ``push_many`` with
    one) raises (what a Redis outage makes RedisPusher raise), once."""

    def __init__(self, pusher, event: str) -> None:
        self.pusher = pusher
        self.event = event
        self.armed = True

    async def push(self, user_ids, event, data, *, replay=True, once_key=None) -> None:
        if self.armed and event == self.event:
            self.armed = False
            raise StoreUnavailable("redis", "Real-time delivery is unavailable for a moment.")
        await self.pusher.push(user_ids, event, data, replay=replay, once_key=once_key)

    async def push_many(self, pushes) -> None:
        if self.armed and any(p.event == self.event for p in pushes):
            self.armed = False
            raise StoreUnavailable("redis", "Real-time delivery is unavailable for a moment.")
        await self.pusher.push_many(pushes)


class FixedPresence:
    """Answers from a set of connected users."""

    def __init__(self, online: set[str]) -> None:
        self.connected = online

    async def online(self, user_ids):
        return [u for u in user_ids if u in self.connected]
