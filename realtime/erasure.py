"""The real-time layer's part of an erasure: it owns the replay logs and the presence
records, so it removes what they keep about an erased user.

Whose logs can hold events about the user is known only to the contexts that pushed
them (``users_told_about`` of messaging and notifications, given by ``create_app``): only
those logs are read.
"""
from __future__ import annotations

from typing import Sequence
from uuid import UUID

from server.services.ports import ToldAbout
from server.services.privacy.contributions import ErasureStep
from storage.redis.offset_log import OffsetLogStore
from storage.redis.presence import PresenceStore


class RedisRealtimeErasure:
    """``server.services.ports.RealtimeErasure``: the replay logs and presence records in Redis."""

    def __init__(self, offset_log: OffsetLogStore, presence: PresenceStore) -> None:
        self.offset_log = offset_log
        self.presence = presence

    def erasure_steps(self, told_about: Sequence[ToldAbout]) -> list[ErasureStep]:
        async def offset_logs(uid: UUID) -> None:
            # Before the pushing contexts erase their records (membership, notifications):
            # those say whose logs to read. Only entries naming the user by id are
            # redacted, keeping every offset resumable; the user's own log goes whole with
            # their keys (redis.user_keys).
            user_id = str(uid)
            owners: list[str] = []
            for source in told_about:
                owners += await source(user_id)
            await self.offset_log.redact_about(user_id, owners)

        async def presence(uid: UUID) -> None:
            # Their id in every instance's presence set (one that crashed keeps it until
            # its TTL otherwise).
            await self.presence.remove_user_everywhere(str(uid))

        return [ErasureStep("realtime.offset_logs", offset_logs,
                            before=("messaging.membership", "notifications.groups",
                                    "notifications.for_and_about")),
                ErasureStep("realtime.presence_and_logs", presence)]
