"""Push windows of grouped notifications: at most one ``notification:new`` per group per
window, across every instance and consumer, and none owed left behind.

Per group two keys: the window (``SET NX PX``: whoever sets it pushes now) and the
pending mark (a change that found the window held: the push it owes is made at the end
of the window, by whoever then takes it). One script does both, atomically.
"""
from __future__ import annotations

import redis.asyncio as aioredis

from storage.redis.client import Keys

# KEYS[1] the window, KEYS[2] the pending mark; ARGV[1] the window in ms, ARGV[2] '1' for
# the check at the end of a window. Returns -1: push now (the window is taken); 0: nothing
# owed (someone pushed since); n > 0: the window is held for n ms more, try again then.
# The pending mark outlives ten windows, so a mark whose owner died is dropped in time.
REQUEST = """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return -1
end
redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[1]) * 10 + 1000)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = 1 end
return ttl
"""

PUSH_NOW = -1
NOTHING_OWED = 0


class PushWindows:
    def __init__(self, redis: aioredis.Redis, keys: Keys, window_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.window_ms = max(1, int(window_ms))
        self._request = redis.register_script(REQUEST)

    async def request(self, user_id: str, group_id: str, *, owed_only: bool = False) -> int:
        """After a change (or, ``owed_only``, at the end of a window it found held):
        ``PUSH_NOW``, ``NOTHING_OWED``, or the ms until the window ends."""
        keys = [self.keys.notification_push_window(user_id, group_id),
                self.keys.notification_push_pending(user_id, group_id)]
        return int(await self._request(keys=keys, args=[self.window_ms, "1" if owed_only else "0"]))

    async def take_owed(self, user_id: str, group_id: str) -> bool:
        """Takes the owed push over (True when one was owed): at shutdown, an instance
        pushes what it would have pushed at the window's end."""
        return bool(await self.redis.delete(self.keys.notification_push_pending(user_id, group_id)))
