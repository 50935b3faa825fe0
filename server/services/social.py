"""The social context's graph: follows, followers/following lists, profile counters.

Follow and unfollow change the follows row, both profiles' counters and the outbox in
one transaction, so the counters stay exact under concurrent requests; the counter rows
are updated last (the row locks are held only until the commit just after) and in a
fixed (id) order so two users following each other at once cannot deadlock.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from kernel.cursors import Cursors, page
from kernel.errors import FieldError, NotFound, ValidationFailed
from kernel.ids import parse_uuid
from kernel.timefmt import iso
from server.read_models.social import FollowState
from server.read_models.users import PublicUserList
from server.bus.catalogue import USER_FOLLOWED, USER_UNFOLLOWED
from server.services.privacy.contributions import ErasureStep, ExportSection, pg_keyset_pages
from server.services.users import UsersService
from storage.postgres.pool import Database
from storage.postgres.repos.follows import FollowsRepo
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.users import UsersRepo

NO_SUCH_USER = "No such user."


class SocialService:
    def __init__(self, db: Database, users: UsersService, *, cursors: Cursors) -> None:
        self.db = db
        self.cursors = cursors
        self.users_service = users
        self.users_repo = UsersRepo()
        self.follows_repo = FollowsRepo()
        self.outbox_repo = OutboxRepo()

    async def follow(self, follower_id: str, followee_id: str) -> FollowState:
        """Idempotent: following someone already followed changes nothing."""
        follower, followee = UUID(follower_id), self._target(follower_id, followee_id)
        async with self.db.transaction(writes_of=[follower_id, str(followee)]) as conn:
            if await self.users_repo.get_by_id(conn, followee) is None:
                raise NotFound(NO_SUCH_USER)
            created = await self.follows_repo.insert(conn, follower, followee)
            if created:
                await self.outbox_repo.add(conn, USER_FOLLOWED,
                                      {"follower_id": follower_id, "followee_id": str(followee)})
                await self._add_to_counters(conn, follower, followee, +1)
        if created:
            await self.users_service.invalidate_profiles(follower_id, str(followee))
        return {"following": True}

    async def unfollow(self, follower_id: str, followee_id: str) -> FollowState:
        """Idempotent: unfollowing someone not followed changes nothing."""
        follower, followee = UUID(follower_id), self._target(follower_id, followee_id)
        async with self.db.transaction(writes_of=[follower_id, str(followee)]) as conn:
            if await self.users_repo.get_by_id(conn, followee) is None:
                raise NotFound(NO_SUCH_USER)
            removed = await self.follows_repo.delete(conn, follower, followee)
            if removed:
                await self.outbox_repo.add(conn, USER_UNFOLLOWED,
                                      {"follower_id": follower_id, "followee_id": str(followee)})
                await self._add_to_counters(conn, follower, followee, -1)
        if removed:
            await self.users_service.invalidate_profiles(follower_id, str(followee))
        return {"following": False}

    async def followers(self, user_id: str, *, limit: int, cursor: str | None) -> PublicUserList:
        return await self._list(user_id, self.follows_repo.list_followers, limit=limit, cursor=cursor)

    async def following(self, user_id: str, *, limit: int, cursor: str | None) -> PublicUserList:
        return await self._list(user_id, self.follows_repo.list_following, limit=limit, cursor=cursor)

    async def is_following(self, follower_id: str, followee_id: str) -> bool:
        follower, followee = parse_uuid(follower_id), parse_uuid(followee_id)
        if follower is None or followee is None:
            return False
        async with self.db.read() as conn:
            return await self.follows_repo.exists(conn, follower, followee)

    async def followed_among(self, follower_id: str, user_ids: list[str]) -> set[str]:
        """Those of ``user_ids`` that ``follower_id`` follows (one query)."""
        wanted = [u for u in (parse_uuid(x) for x in user_ids) if u is not None]
        if not wanted:
            return set()
        async with self.db.read() as conn:
            return {str(u) for u in await self.follows_repo.followed_among(conn, UUID(follower_id), wanted)}

    async def follower_ids(self, user_id: str) -> list[str]:
        """Ids of everyone following ``user_id`` (feed fan-out, notifications)."""
        async with self.db.read() as conn:
            return [str(u) for u in await self.follows_repo.follower_ids(conn, UUID(user_id))]

    async def followee_ids(self, user_id: str) -> list[str]:
        """Ids of everyone ``user_id`` follows."""
        async with self.db.read() as conn:
            return [str(u) for u in await self.follows_repo.followee_ids(conn, UUID(user_id))]

    async def followers_among(self, followee_id: str, user_ids: list[str]) -> set[str]:
        """Those of ``user_ids`` who follow ``followee_id`` now (one query, on the primary)."""
        wanted = [u for u in (parse_uuid(x) for x in user_ids) if u is not None]
        if not wanted:
            return set()
        async with self.db.read() as conn:
            return {str(u) for u in await self.follows_repo.followers_among(conn, UUID(followee_id), wanted)}

    async def follower_count(self, user_id: str) -> int:
        """The user's followers counter (kept exact with every follow, unfollow and erasure)."""
        async with self.db.read() as conn:
            return await self.users_repo.followers_count(conn, UUID(user_id)) or 0

    # --- erasure and export (for the privacy context) ----------------------------------

    def erasure_steps(self) -> list[ErasureStep]:
        async def follows(uid: UUID) -> None:
            # Both directions, with the others' followers/following counters adjusted in the
            # same transaction (a rerun finds nothing to delete and changes no counter).
            async with self.db.transaction() as conn:
                others = await self._erase_follows(conn, uid)
            await self.users_service.invalidate_profiles(*others)

        return [ErasureStep("social.follows", follows)]

    async def _erase_follows(self, conn: asyncpg.Connection, uid: UUID) -> list[str]:
        """The user's follows both ways, the other side's counters fixed; returns the
        other users' ids (their profiles change)."""
        others: list[str] = []
        for row in sorted(await self.follows_repo.delete_all_of_user(conn, uid),
                          key=lambda r: (str(r["follower_id"]), str(r["followee_id"]))):
            if row["follower_id"] == uid:
                await self.users_repo.add_to_counters(conn, row["followee_id"], followers=-1)
                others.append(str(row["followee_id"]))
            else:
                await self.users_repo.add_to_counters(conn, row["follower_id"], following=-1)
                others.append(str(row["follower_id"]))
        return others

    def export_sections(self) -> list[ExportSection]:
        def direction(name: str):
            async def fetch(conn: asyncpg.Connection, uid: UUID, after: Any, limit: int) -> list[asyncpg.Record]:
                return await self.follows_repo.page_of_user(conn, uid, name, after, limit)

            return pg_keyset_pages(self.db, fetch, lambda r: {"user_id": str(r["user_id"]),
                                                              "since": iso(r["created_at"])}, id_column="user_id")

        return [ExportSection("following", direction("following")),
                ExportSection("followers", direction("followers"))]

    # --- helpers --------------------------------------------------------------------

    @staticmethod
    def _target(follower_id: str, followee_id: str) -> UUID:
        followee = parse_uuid(followee_id)
        if followee is None:
            raise NotFound(NO_SUCH_USER)
        if str(followee) == follower_id:
            raise ValidationFailed("You cannot follow yourself.", [FieldError("id", "cannot be yourself")])
        return followee

    async def _add_to_counters(self, conn: asyncpg.Connection, follower: UUID, followee: UUID, delta: int) -> None:
        """The last statement before commit: a popular user's profile row is the hottest
        lock of a follow, so it is taken as late as possible and both rows go in one
        round trip (in id order, so that crossing follows cannot deadlock)."""
        await self.users_repo.add_to_counters_in_order(conn, [
            (follower, {"following": delta}), (followee, {"followers": delta})])

    async def _list(self, user_id: str, fetch, *, limit: int, cursor: str | None) -> PublicUserList:
        uid = parse_uuid(user_id)
        after = self.cursors.decode(cursor, datetime, UUID)
        # A follow changes both users' lists: each is marked, so the listed user's mark is enough.
        async with self.db.read(lag_ok=True, writes_of=[user_id if uid else None]) as conn:
            if uid is None or await self.users_repo.get_by_id(conn, uid) is None:
                raise NotFound(NO_SUCH_USER)
            rows = await fetch(conn, uid, after=after, limit=limit + 1)
        result = page(rows, limit, lambda r: self.cursors.encode(r["created_at"], r["user_id"]))
        profiles = await self.users_service.get_public_many([str(r["user_id"]) for r in result["items"]])
        result["items"] = [profiles[str(r["user_id"])] for r in result["items"] if str(r["user_id"]) in profiles]
        return result
