"""Retention: what privacy prunes when its worker passes. Published outbox rows and
processed-event ids are pruned by the event bus (``event_retention_days``)."""
from __future__ import annotations

from server.services.privacy.accounts import Accounts


class Retention:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def prune(self) -> dict[str, int]:
        """Expired sessions; returns how many went, by kind."""
        return {"sessions": await self.accounts.delete_expired_sessions()}
