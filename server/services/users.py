"""The users context: accounts, credentials, sessions, profiles."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple, Protocol
from uuid import UUID

import asyncpg

from kernel.errors import FieldError, NotFound, Overloaded, Unauthorized, ValidationFailed
from kernel.ids import parse_uuid
from kernel.settings import Settings
from kernel.timefmt import iso, utcnow
from server.read_models.users import OwnUser, PublicUser
from server.bus.catalogue import USER_ERASURE_REQUESTED, USER_ERASURE_RESTORED, USER_PURGED, USER_REGISTERED
from server.bus.types import USER_ID_FIELDS, USER_ID_LIST_FIELDS
from server.security import Passwords, hash_token, new_session_token
from server.services.ports import DISCONNECT_SESSIONS, DISCONNECT_USER, Pusher
from server.services.privacy.contributions import ErasureStep, Page
from server.services.rate_limits import RateLimits
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.sessions import SessionsRepo
from storage.postgres.repos.users import UsersRepo
from storage.redis.client import RedisUnavailable
from storage.redis.privacy import RedisErasure
from storage.redis.profile_cache import ProfileCache
from storage.redis.rate_limit import login_subject, user_subject
from storage.redis.sessions_cache import SessionsCache

log = logging.getLogger("pulse.users")

BAD_CREDENTIALS = "Invalid login or password."


class Principal(NamedTuple):
    """Who is calling: the authenticated user and the hash of the token used. (A named
    tuple: made on every authenticated request, at a fraction of a frozen dataclass's cost.)"""

    user_id: str
    token_hash: bytes


@dataclass(frozen=True)
class ClientInfo:
    address: str
    user_agent: str | None = None


def public_user(row: asyncpg.Record | dict[str, Any]) -> PublicUser:
    return {
        "id": str(row["id"]),
        "username": row["username"],
        "display_name": row["display_name"],
        "bio": row["bio"],
        "avatar_url": row["avatar_url"],
        "created_at": iso(row["created_at"]),
        "followers_count": row["followers_count"],
        "following_count": row["following_count"],
        "posts_count": row["posts_count"],
    }


def own_user(row: asyncpg.Record) -> OwnUser:
    return {**public_user(row), "email": row["email"]}


class AccountAudit(Protocol):
    """Where the users context reports its events for the audit trail (the privacy
    context's ``AuditTrail``)."""

    async def record_registration(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        """Inside the registration transaction."""

    async def record_login_failure(self, login: str, client: ClientInfo) -> None:
        """Never raises: a failed login answers 401 whatever happens here."""


class UsersService:
    def __init__(
        self, db: Database, sessions_cache: SessionsCache, profile_cache: ProfileCache,
        rate_limits: RateLimits, passwords: Passwords, settings: Settings, *, redis_erasure: RedisErasure,
        pusher: Pusher | None = None, audit: AccountAudit | None = None,
    ) -> None:
        self.db = db
        self.sessions_cache = sessions_cache
        self.profile_cache = profile_cache
        self.redis_erasure = redis_erasure
        self.rate_limits = rate_limits
        self.passwords = passwords
        self.settings = settings
        self.pusher = pusher
        self.audit = audit
        self.users_repo = UsersRepo()
        self.sessions_repo = SessionsRepo()
        self.outbox_repo = OutboxRepo()

    # --- accounts -------------------------------------------------------------------

    async def register(
        self, *, email: str, username: str, password: str, display_name: str | None, client: ClientInfo
    ) -> tuple[OwnUser, str]:
        await self.rate_limits.reserve_registration(client.address)
        password_hash = await self.passwords.hash(password)
        created: list[str] = []  # the new user's reads skip a replica that lacks them
        async with self.db.transaction(writes_of=created) as conn:
            row = await self.users_repo.insert_user_with_profile(
                conn, email=email, username=username, password_hash=password_hash,
                display_name=display_name or username,
            )
            await self.outbox_repo.add(conn, USER_REGISTERED, {
                "user_id": str(row["id"]), "username": row["username"], "display_name": row["display_name"],
            })
            created.append(str(row["id"]))
            if self.audit is not None:
                await self.audit.record_registration(conn, row["id"])
            token = await self._open_session(conn, row["id"], client)
        return own_user(row), token

    async def login(self, *, login: str, password: str, client: ClientInfo) -> tuple[OwnUser, str]:
        user_id = await self.verify_credentials(login=login, password=password, client=client, allow_pending=False)
        async with self.db.transaction() as conn:
            token = await self._open_session(conn, user_id, client)
            row = await self.users_repo.get_by_id(conn, user_id)
        return own_user(row), token

    async def verify_credentials(self, *, login: str, password: str, client: ClientInfo, allow_pending: bool) -> UUID:
        """The id of the account if the password is right; one message for every failure."""
        account = login_subject(login)
        await self.rate_limits.reserve_password_attempt(account, client.address)
        try:
            async with self.db.read() as conn:
                creds = await self.users_repo.get_credentials_by_login(conn, login)
            ok = await self.passwords.verify(creds["password_hash"] if creds else None, password)
        except Exception:
            # Not checked (hashing refused, a store down): the attempt is given back.
            await self.rate_limits.password_attempt_not_checked(account, client.address)
            raise
        if ok and creds["status"] == "pending_erasure" and not allow_pending:
            ok = False
        if not ok:
            if self.audit is not None:
                await self.audit.record_login_failure(login, client)
            raise Unauthorized(BAD_CREDENTIALS)
        await self.rate_limits.password_attempt_succeeded(account, client.address)
        if self.passwords.needs_rehash(creds["password_hash"]):
            try:
                new_hash = await self.passwords.hash(password)
            except Overloaded:
                return creds["id"]  # rehashed at a later login
            async with self.db.connection() as conn:
                await self.users_repo.set_password_hash(conn, creds["id"], new_hash)
        return creds["id"]

    async def check_password(self, user_id: str, password: str, client: ClientInfo) -> None:
        """Re-authentication of a signed-in user: limited like logins (its own counter)."""
        account = user_subject(user_id)
        await self.rate_limits.reserve_password_attempt(account, client.address)
        try:
            async with self.db.read() as conn:
                password_hash = await self.users_repo.get_password_hash(conn, UUID(user_id))
            ok = await self.passwords.verify(password_hash, password)
        except Exception:
            await self.rate_limits.password_attempt_not_checked(account, client.address)
            raise
        if not ok:
            raise Unauthorized(BAD_CREDENTIALS)
        await self.rate_limits.password_attempt_succeeded(account, client.address)

    # --- sessions -------------------------------------------------------------------

    async def _open_session(self, conn: asyncpg.Connection, user_id: UUID, client: ClientInfo) -> str:
        token = new_session_token()
        token_hash = hash_token(token)
        expires_at = utcnow() + timedelta(seconds=self.settings.session_ttl_seconds)
        await self.sessions_repo.insert(
            conn, token_hash=token_hash, user_id=user_id, expires_at=expires_at,
            user_agent=(client.user_agent or "")[:300] or None, client_address=client.address,
        )
        # Write-through: cached now, though the transaction commits just after (a rollback
        # leaves a cache entry for a token nobody was given).
        await self.sessions_cache.put(
            token_hash, str(user_id), min(self.settings.session_cache_ttl_seconds, self.settings.session_ttl_seconds))
        return token

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("Missing bearer token.")
        token_hash = hash_token(token)
        # The instance's near-cache, then Redis, then PostgreSQL.
        user_id = self.sessions_cache.near_user_id(token_hash)
        if user_id is None:
            user_id = await self.sessions_cache.get_user_id(token_hash)
        if user_id is None:
            near_token = self.sessions_cache.near_fill_token()
            async with self.db.read() as conn:
                row = await self.sessions_repo.get_live(conn, token_hash)
            if row is None:
                raise Unauthorized("Invalid or expired token.")
            user_id = str(row["user_id"])
            remaining = int((row["expires_at"] - utcnow()).total_seconds())
            ttl = min(remaining, self.settings.session_cache_ttl_seconds)
            await self.sessions_cache.put(token_hash, user_id, ttl)
            self.sessions_cache.keep_near(token_hash, user_id, ttl, near_token)
        return Principal(user_id=user_id, token_hash=token_hash)

    async def logout(self, principal: Principal) -> None:
        async with self.db.connection() as conn:
            await self.sessions_repo.delete(conn, principal.token_hash)
        await self.sessions_cache.drop(principal.token_hash)
        await self._disconnect_sockets(principal.user_id, DISCONNECT_SESSIONS,
                                       {"token_hashes": [principal.token_hash.hex()]})

    async def logout_all(self, principal: Principal) -> None:
        """Revokes every session of the caller (this one included)."""
        async with self.db.transaction() as conn:
            token_hashes = await self.revoke_all_sessions(conn, principal.user_id)
        await self.sessions_cache.drop(principal.token_hash, *token_hashes)
        await self._disconnect_sockets(principal.user_id, DISCONNECT_USER, {})

    async def _disconnect_sockets(self, user_id: str, event: str, data: dict[str, Any]) -> None:
        """The fast path: every instance closes the revoked sessions' sockets now. Best
        effort: each instance also re-checks its sockets' sessions periodically
        (``socket_session_check_seconds``), which covers a lost message and expiry."""
        if self.pusher is None:
            return
        try:
            await self.pusher.push([user_id], event, data, replay=False)
        except Exception as exc:  # noqa: BLE001 - the periodic check closes them a moment later
            log.warning("could not push the disconnect of revoked sessions (%s)", exc)

    async def live_sessions(self, token_hashes: list[bytes]) -> set[bytes]:
        """Those of ``token_hashes`` that are live sessions of active users: the cache
        first, PostgreSQL (one query) for the rest, which are then cached again."""
        try:
            live = await self.sessions_cache.cached_among(token_hashes)
        except RedisUnavailable as exc:
            log.warning("session cache read failed, using PostgreSQL: %s", exc)
            live = set()
        missing = [h for h in token_hashes if h not in live]
        if missing:
            async with self.db.read() as conn:
                rows = await self.sessions_repo.live_among(conn, missing)
            now, ttl = utcnow(), self.settings.session_cache_ttl_seconds
            found = [(bytes(r["token_hash"]), str(r["user_id"]), min(ttl, int((r["expires_at"] - now).total_seconds())))
                     for r in rows]
            live.update(h for h, _, _ in found)
            await self.sessions_cache.put_many(found)
        return live

    async def revoke_all_sessions(self, conn: asyncpg.Connection, user_id: str) -> list[bytes]:
        """Delete every session of the user (inside the caller's transaction); the caller
        drops the returned hashes from the cache after commit."""
        return await self.sessions_repo.delete_all_for_user(conn, UUID(user_id))

    # --- profiles -------------------------------------------------------------------

    async def get_me(self, user_id: str) -> OwnUser:
        # Kept in the instance (with the public profile's invalidations): no round trip.
        cached = self.profile_cache.near_own_profile(user_id)
        if cached is not None:
            return cached
        near_token = self.profile_cache.near_own_fill_token()
        async with self.db.read() as conn:
            row = await self.users_repo.get_by_id(conn, UUID(user_id))
        if row is None:
            raise NotFound("No such user.")
        profile = own_user(row)
        self.profile_cache.keep_own_near(profile, near_token)
        return profile

    async def update_me(self, user_id: str, changes: dict[str, Any]) -> OwnUser:
        if "display_name" in changes and changes["display_name"] is None:
            raise ValidationFailed("The request body is not valid.",
                                   [FieldError("display_name", "cannot be null")])
        if "bio" in changes and changes["bio"] is None:
            changes = {**changes, "bio": ""}
        async with self.db.transaction(writes_of=[user_id]) as conn:
            if changes:
                await self.users_repo.update_profile(conn, UUID(user_id), changes)
            row = await self.users_repo.get_by_id(conn, UUID(user_id))
        if row is None:
            raise NotFound("No such user.")
        await self.profile_cache.invalidate(user_id)
        return own_user(row)

    async def get_public(self, id_or_username: str, *, viewer_id: str | None = None) -> PublicUser:
        """A public profile by id or username (cache-aside). From the primary while the
        replica lacks the owner's or the viewer's latest write (so a stale row never fills
        the cache after the owner's change)."""
        # Near-cache keys are ids as str(UUID) gives them: a hit needs no parsing.
        cached = self.profile_cache.near_profile(id_or_username)
        if cached is not None:
            return cached
        user_id = str(parse_uuid(id_or_username) or "") or await self.profile_cache.get_id_for_username(id_or_username)
        if user_id:
            cached = self.profile_cache.near_profile(user_id) or await self.profile_cache.get(user_id)
            if cached is not None:
                return cached
        near_token = self.profile_cache.near_fill_token()
        async with self.db.read(lag_ok=True, writes_of=(user_id, viewer_id)) as conn:
            if parse_uuid(id_or_username):
                row = await self.users_repo.get_by_id(conn, UUID(id_or_username))
            else:
                row = await self.users_repo.get_by_username(conn, id_or_username)
        if row is None:
            raise NotFound("No such user.")
        profile = public_user(row)
        await self.profile_cache.put(profile, near_token)
        return profile

    async def get_public_many(self, user_ids: list[str]) -> dict[str, PublicUser]:
        """Public profiles for several ids at once (missing or hidden ones are left out)."""
        ids = [u for u in (parse_uuid(x) for x in user_ids) if u is not None]
        if not ids:
            return {}
        async with self.db.read(lag_ok=True, writes_of=[str(i) for i in ids]) as conn:
            rows = await self.users_repo.get_many_by_ids(conn, ids)
        return {str(r["id"]): public_user(r) for r in rows}

    async def exists(self, user_id: str) -> bool:
        uid = parse_uuid(user_id)
        if uid is None:
            return False
        async with self.db.read() as conn:
            return await self.users_repo.get_by_id(conn, uid) is not None

    async def existing(self, user_ids: list[str]) -> set[str]:
        """Those of ``user_ids`` that are active accounts, read from the primary (event
        consumers ask this so that an event in flight never writes about someone pending
        erasure or purged)."""
        ids = [u for u in (parse_uuid(x) for x in dict.fromkeys(user_ids)) if u is not None]
        if not ids:
            return set()
        async with self.db.read() as conn:
            return {str(r["id"]) for r in await self.users_repo.get_many_by_ids(conn, ids)}

    async def invalidate_profiles(self, *user_ids: str) -> None:
        """Call after a change to a profile's counters or fields."""
        await self.profile_cache.invalidate(*user_ids)

    # --- erasure and export (the privacy context's ``Accounts``) ------------------------

    async def erasure_state(self, conn: asyncpg.Connection, user_id: UUID) -> asyncpg.Record | None:
        """(id, status, purge_after), the row locked for the caller's transaction: a
        restore and a purge of one account never overlap."""
        return await self.users_repo.lock_erasure_state(conn, user_id)

    async def username_of(self, conn: asyncpg.Connection, user_id: UUID, *, include_pending: bool) -> str | None:
        row = await self.users_repo.get_by_id(conn, user_id, include_pending=include_pending)
        return row["username"] if row else None

    async def hide_for_erasure(self, conn: asyncpg.Connection, user_id: UUID, purge_after: datetime) -> list[bytes]:
        """Pending erasure, sessions revoked, event out (in the caller's transaction);
        the caller calls ``forget_hidden`` with the returned token hashes after commit."""
        await self.users_repo.mark_pending_erasure(conn, user_id, purge_after)
        token_hashes = await self.revoke_all_sessions(conn, str(user_id))
        # Consumers: realtime disconnects the user's sockets and drops presence; feeds
        # and follower lists filter on users.status.
        await self.outbox_repo.add(conn, USER_ERASURE_REQUESTED, {"user_id": str(user_id)})
        return token_hashes

    async def move_purge_after(self, conn: asyncpg.Connection, user_id: UUID, purge_after: datetime) -> None:
        await self.users_repo.mark_pending_erasure(conn, user_id, purge_after)

    async def forget_hidden(self, user_id: str, username: str, token_hashes: list[bytes]) -> None:
        await self.sessions_cache.drop(*token_hashes)
        await self.profile_cache.invalidate(user_id)
        await self.profile_cache.forget_username(username)
        if self.pusher is not None:
            # Every instance closes the user's sockets now. Best effort: with Redis down
            # the sockets stay open until they reconnect, and a reconnect is refused.
            try:
                await self.pusher.push([user_id], DISCONNECT_USER, {}, replay=False)
            except Exception as exc:  # noqa: BLE001
                log.error("could not disconnect the sockets of a user pending erasure: %s", exc)

    async def restore_account(self, conn: asyncpg.Connection, user_id: UUID, client: ClientInfo, *,
                              purge_started: Callable[[asyncpg.Connection, UUID], Awaitable[bool]],
                              ) -> tuple[OwnUser, str]:
        """Active again with a new session, inside the recovery window and before the
        purge started (in the caller's transaction; invalidate the profile after commit)."""
        row = await self.users_repo.lock_erasure_state(conn, user_id)
        restorable = (
            row is not None and row["status"] == "pending_erasure" and row["purge_after"] is not None
            and row["purge_after"] > utcnow() and not await purge_started(conn, user_id)
        )
        if not restorable:
            # Active accounts, expired windows and purges under way: the one message.
            raise Unauthorized(BAD_CREDENTIALS)
        await self.users_repo.restore(conn, user_id)
        token = await self._open_session(conn, user_id, client)
        await self.outbox_repo.add(conn, USER_ERASURE_RESTORED, {"user_id": str(user_id)})
        return own_user(await self.users_repo.get_by_id(conn, user_id)), token

    async def due_for_purge(self, now: datetime, limit: int) -> list[UUID]:
        async with self.db.read() as conn:
            return await self.users_repo.due_for_purge(conn, now, limit)

    async def delete_account(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        """The purge's last step (in its transaction): the row goes, what references it
        cascades."""
        await self.users_repo.delete(conn, user_id)
        await self.outbox_repo.add(conn, USER_PURGED, {"user_id": str(user_id)})

    async def account_for_export(self, user_id: UUID) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = await self.users_repo.get_by_id(conn, user_id)
        return {**own_user(row), "status": row["status"]} if row else None

    async def session_pages(self, user_id: UUID) -> AsyncIterator[Page]:
        async with self.db.read() as conn:
            rows = await self.sessions_repo.list_for_user(conn, user_id)
        # Token hashes are secrets and never leave the server.
        yield [{"created_at": iso(r["created_at"]), "expires_at": iso(r["expires_at"]),
                "user_agent": r["user_agent"], "client_address": r["client_address"]} for r in rows]

    async def delete_expired_sessions(self) -> int:
        async with self.db.connection() as conn:
            return await self.sessions_repo.delete_expired(conn)

    def erasure_steps(self) -> list[ErasureStep]:
        """The account's own traces, after every other context's steps (the users row
        itself is the saga's final step)."""
        async def sessions(uid: UUID) -> None:
            # Revoked at the erasure request already; again here in case one slipped in.
            async with self.db.transaction() as conn:
                hashes = await self.sessions_repo.delete_all_for_user(conn, uid)
            await self.sessions_cache.drop(*hashes)

        async def redis_keys(uid: UUID) -> None:
            async with self.db.read() as conn:
                row = await self.users_repo.get_by_id(conn, uid, include_pending=True)
            await self.redis_erasure.delete_user_keys(str(uid), *((row["username"], row["email"]) if row else ()))

        async def events_naming_user(uid: UUID) -> None:
            # Every event whose id fields name the user, delivered or still in flight (see
            # OutboxRepo.erase_user); the purge's own user.purged goes once delivered.
            # Last: an earlier step may emit events (the cancellations of hosted events).
            async with self.db.transaction() as conn:
                await self.outbox_repo.erase_user(conn, str(uid), list(USER_ID_FIELDS), list(USER_ID_LIST_FIELDS))

        return [
            ErasureStep("users.sessions", sessions),
            ErasureStep("redis.user_keys", redis_keys),
            ErasureStep("outbox.published", events_naming_user),
        ]
