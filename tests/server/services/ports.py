"""In-process stand-ins for the real-time port (server/services/ports.py), to see what
the services push without sockets. The stores behind the services stay real."""
from __future__ import annotations


class RecordingPusher:
    """Records every push: (user_ids, event, data)."""

    def __init__(self) -> None:
        self.pushed: list[tuple[list[str], str, dict]] = []

    async def push(self, user_ids, event, data, *, replay=True) -> None:
        self.pushed.append((list(user_ids), event, data))


class FixedPresence:
    """Answers from a set of connected users."""

    def __init__(self, online: set[str]) -> None:
        self.connected = online

    async def online(self, user_ids):
        return [u for u in user_ids if u in self.connected]
