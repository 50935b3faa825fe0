"""Who is online, as one user may learn it (API.md v1.1): only users who share a
conversation with the asker or whom the asker follows; anyone else reads as offline."""
from __future__ import annotations

from typing import TYPE_CHECKING

from server.services.ports import Presence

if TYPE_CHECKING:
    from server.services.messaging import MessagingService
    from server.services.social import SocialService


class PresenceService:
    def __init__(self, presence: Presence, social: "SocialService", messaging: "MessagingService") -> None:
        self.presence = presence
        self.social = social
        self.messaging = messaging

    async def online_for(self, asker_id: str, user_ids: list[str]) -> list[str]:
        """Those of ``user_ids`` (bounded by the caller) online and visible to the asker,
        in the order asked. Who is online is read first (Redis); the relationships are
        checked only for those, one query per store, the second skipped when the first
        already covers everyone."""
        online = await self.presence.online(user_ids)
        others = [u for u in online if u != asker_id]
        visible = {asker_id} if asker_id in online else set()
        if others:
            visible |= await self.social.followed_among(asker_id, others)
            rest = [u for u in others if u not in visible]
            if rest:
                visible |= await self.messaging.co_members_among(asker_id, rest)
        return [u for u in online if u in visible]
