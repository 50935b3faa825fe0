"""What each context contributes to the privacy framework: erasure steps (run in this
order by the purge saga, before the final deletion of the users row) and export
sections (written in this order after account, sessions and audit).

To plug a context in, add its entries to the two lists below. A step must be
idempotent and keep counters on other users exact (delete the rows and adjust the
counters in one transaction); a section reads its store page by page
(``keyset_pages``), with no secrets and nothing private to other users.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from server.services.privacy import ErasureStep, ExportSection
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.sessions import SessionsRepo
from storage.postgres.repos.users import UsersRepo
from storage.redis.client import Keys
from storage.redis.privacy import RedisErasure

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from pymongo.asynchronous.database import AsyncDatabase

    from server.config import Settings
    from server.services import Services
    from storage.postgres.pool import Database

log = logging.getLogger("pulse.privacy")


@dataclass(frozen=True)
class PrivacyDeps:
    db: "Database"
    mongo: "AsyncDatabase"
    redis: "aioredis.Redis"
    keys: Keys
    settings: "Settings"
    services: "Services"


def build_erasure_steps(d: PrivacyDeps) -> list[ErasureStep]:
    users_repo, sessions_repo, outbox_repo = UsersRepo(), SessionsRepo(), OutboxRepo()
    redis_erasure = RedisErasure(d.redis, d.keys)

    async def identity(uid: UUID) -> tuple[str, str] | None:
        """(username, email) while the users row exists (it goes last)."""
        async with d.db.read() as conn:
            row = await users_repo.get_by_id(conn, uid, include_pending=True)
        return (row["username"], row["email"]) if row else None

    async def sessions(uid: UUID) -> None:
        # Revoked at the erasure request already; again here in case one slipped in.
        async with d.db.transaction() as conn:
            hashes = await sessions_repo.delete_all_for_user(conn, uid)
        await d.services.users.sessions_cache.drop(*hashes)

    async def redis_user_keys(uid: UUID) -> None:
        names = await identity(uid)
        await redis_erasure.delete_user_keys(str(uid), *(names or ()))

    async def published_events(uid: UUID) -> None:
        # Delivered events naming the user; events still in flight are left to the
        # relay and go with the outbox retention.
        names = await identity(uid)
        async with d.db.connection() as conn:
            await outbox_repo.delete_published_mentioning(conn, [str(uid), *(names or ())])

    return [
        # Contexts' content goes first (added as they land), the account's traces last.
        ErasureStep("users.sessions", sessions),
        ErasureStep("redis.user_keys", redis_user_keys),
        ErasureStep("outbox.published", published_events),
    ]


def build_export_sections(d: PrivacyDeps) -> list[ExportSection]:
    # account, sessions and audit are written by PrivacyService itself.
    return []
