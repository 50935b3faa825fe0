"""Coalesced pushes of grouped notifications (API.md "Grouped notifications"): a group's
``notification:new`` goes out at most once per ``PULSE_NOTIFICATION_PUSH_COALESCE_MS``,
carrying the group as it stands when it is pushed, and the last change of a burst is
always pushed.

A change asks the group's push window in Redis (``storage/redis/notification_push``):
free, it pushes now; held, the window records that a push is owed and this instance
waits for the window's end (one timer per group, not per change), then asks again: the
instance that takes the window then pushes the group as read at that moment, so it
includes every change made before. Each push reads the group afresh: the state a change
saw may be older than one another change left owed.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from kernel.tasks import cancel_and_wait
from storage.redis.notification_push import NOTHING_OWED, PUSH_NOW, PushWindowStore

log = logging.getLogger("pulse.notifications")

# (user id, group id) -> pushes the group as it is now (nothing when it is gone).
PushLatest = Callable[[str, str], Awaitable[None]]


@dataclass
class _Owed:
    task: asyncio.Task | None = None
    # A change found this timer running after its last check: check once more.
    again: bool = False
    keys: tuple[str, str] = field(default=("", ""))


class GroupPushes:
    def __init__(self, windows: PushWindowStore | None, push_latest: PushLatest) -> None:
        # None: no coalescing (PULSE_NOTIFICATION_PUSH_COALESCE_MS=0): every change pushes.
        self.windows = windows
        self.push_latest = push_latest
        self._owed: dict[tuple[str, str], _Owed] = {}

    async def changed(self, user_id: str, group_id: str) -> None:
        """A group changed: push it now, or make sure it is pushed when its window ends."""
        if self.windows is None:
            await self.push_latest(user_id, group_id)
            return
        try:
            wait = await self.windows.request(user_id, group_id)
        except Exception as exc:  # noqa: BLE001 - Redis down: a push too many beats one lost
            log.warning("push window of group %s unavailable (%s); pushing now", group_id, exc)
            wait = PUSH_NOW
        if wait == PUSH_NOW:
            await self.push_latest(user_id, group_id)
        elif wait > 0:
            self._owe(user_id, group_id, wait)

    def _owe(self, user_id: str, group_id: str, wait_ms: int) -> None:
        key = (user_id, group_id)
        owed = self._owed.get(key)
        if owed is not None:
            owed.again = True
            return
        owed = self._owed[key] = _Owed(keys=key)
        owed.task = asyncio.create_task(self._push_when_owed(owed, wait_ms), name=f"group-push-{group_id}")

    async def _push_when_owed(self, owed: _Owed, wait_ms: int) -> None:
        user_id, group_id = owed.keys
        assert self.windows is not None
        try:
            while True:
                await asyncio.sleep(wait_ms / 1000)
                owed.again = False
                try:
                    wait_ms = await self.windows.request(user_id, group_id, owed_only=True)
                except Exception as exc:  # noqa: BLE001
                    log.warning("push window of group %s unavailable (%s); pushing now", group_id, exc)
                    wait_ms = PUSH_NOW
                if wait_ms == PUSH_NOW:
                    await self.push_latest(user_id, group_id)
                    wait_ms = 0  # a change since then owes one more: ask again at once
                elif wait_ms == NOTHING_OWED:
                    if not owed.again:
                        return
                    wait_ms = 0
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the group stays right in MongoDB; clients refetch
            log.exception("coalesced push of group %s to %s failed", group_id, user_id)
        finally:
            if self._owed.get(owed.keys) is owed:
                del self._owed[owed.keys]

    async def stop(self) -> None:
        """Pushes what is still owed at once (a window cut short beats a change lost)."""
        owed = list(self._owed.values())
        for o in owed:
            await cancel_and_wait(o.task)
        for o in owed:
            try:
                if self.windows is not None and await self.windows.take_owed(*o.keys):
                    await self.push_latest(*o.keys)
            except Exception:  # noqa: BLE001
                log.exception("pushing group %s to %s at shutdown failed", o.keys[1], o.keys[0])
        self._owed.clear()
