"""Push windows of grouped notifications: at most one ``notification:new`` per group per
window, across every instance and consumer, and none owed left behind.

Per group three keys: the window (whoever takes it pushes now; it is held for the window's
length), the pending mark (a change that found the window held: the push it owes is made
at the end of the window, by whoever takes the next one) and the streak (how many windows
in a row the group was pushed in: a group that keeps changing doubles its window each
time, up to the maximum, and falls back to the base once quiet for twice its window). One
script does it all, atomically.
"""
from __future__ import annotations

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary

# KEYS: the window, the pending mark, the streak. ARGV: the base window in ms, '1' for the
# check at the end of a window, the largest window in ms. Returns -1: push now (the window
# is taken); 0: nothing owed (someone pushed since); n > 0: the window is held for n ms
# more, ask again then. The pending mark outlives ten of the largest windows, so a mark
# whose owner died goes in time.
REQUEST = """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local base, largest = tonumber(ARGV[1]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local streak = redis.call('INCR', KEYS[3])
  local window = math.min(largest, base * 2 ^ math.min(streak - 1, 30))
  window = math.floor(window)
  redis.call('SET', KEYS[1], '1', 'PX', window)
  redis.call('PEXPIRE', KEYS[3], 2 * window)
  redis.call('DEL', KEYS[2])
  return -1
end
redis.call('SET', KEYS[2], '1', 'PX', largest * 10 + 1000)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = 1 end
return ttl
"""

PUSH_NOW = -1
NOTHING_OWED = 0


@redis_boundary
class PushWindowStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, window_ms: int, max_window_ms: int | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.window_ms = max(1, int(window_ms))
        self.max_window_ms = max(self.window_ms, int(max_window_ms or self.window_ms))
        self._request = redis.register_script(REQUEST)

    def _keys(self, user_id: str, group_id: str) -> list[str]:
        return [self.keys.notification_push_window(user_id, group_id),
                self.keys.notification_push_pending(user_id, group_id),
                self.keys.notification_push_streak(user_id, group_id)]

    async def request(self, user_id: str, group_id: str, *, owed_only: bool = False) -> int:
        """After a change (or, ``owed_only``, at the end of a window it found held):
        ``PUSH_NOW``, ``NOTHING_OWED``, or the ms until the window ends."""
        return int(await self._request(keys=self._keys(user_id, group_id),
                                       args=[self.window_ms, "1" if owed_only else "0", self.max_window_ms]))

    async def take_owed(self, user_id: str, group_id: str) -> bool:
        """Takes the owed push over (True when one was owed): at shutdown, an instance
        pushes what it would have pushed at the window's end."""
        return bool(await self.redis.delete(self.keys.notification_push_pending(user_id, group_id)))
