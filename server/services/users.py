"""The users context: accounts, credentials, sessions, profiles."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from kernel.errors import FieldError, NotFound, Overloaded, Unauthorized, ValidationFailed
from kernel.ids import parse_uuid
from kernel.settings import Settings
from kernel.timefmt import iso, utcnow
from server.read_models.users import OwnUser, PublicUser
from server.bus.catalogue import USER_REGISTERED
from server.security import Passwords, hash_token, new_session_token
from server.services.ports import DISCONNECT_SESSIONS, DISCONNECT_USER, Pusher
from server.services.rate_limits import RateLimits
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.sessions import SessionsRepo
from storage.postgres.repos.users import UsersRepo
from storage.redis.client import RedisUnavailable
from storage.redis.profile_cache import ProfileCache
from storage.redis.rate_limit import login_subject, user_subject
from storage.redis.sessions_cache import SessionsCache

log = logging.getLogger("pulse.users")

BAD_CREDENTIALS = "Invalid login or password."


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated user and the hash of the token used."""

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


class UsersService:
    def __init__(
        self, db: Database, sessions_cache: SessionsCache, profile_cache: ProfileCache,
        rate_limits: RateLimits, passwords: Passwords, settings: Settings, *, pusher: Pusher | None = None,
    ) -> None:
        self.db = db
        self.sessions_cache = sessions_cache
        self.profile_cache = profile_cache
        self.rate_limits = rate_limits
        self.passwords = passwords
        self.settings = settings
        self.pusher = pusher
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
            await self.on_registered(conn, row["id"])
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
            await self.on_login_failure(login, client)
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

    async def on_login_failure(self, login: str, client: ClientInfo) -> None:
        """Hook for the audit trail (privacy context)."""

    async def on_registered(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        """Hook for the audit trail (privacy context), inside the registration transaction."""

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

    async def open_session(self, conn: asyncpg.Connection, user_id: UUID, client: ClientInfo) -> str:
        """A new session for a user whose credentials the caller verified (restore)."""
        return await self._open_session(conn, user_id, client)

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
        user_id = await self.sessions_cache.get_user_id(token_hash)
        if user_id is None:
            async with self.db.read() as conn:
                row = await self.sessions_repo.get_live(conn, token_hash)
            if row is None:
                raise Unauthorized("Invalid or expired token.")
            user_id = str(row["user_id"])
            remaining = int((row["expires_at"] - utcnow()).total_seconds())
            await self.sessions_cache.put(token_hash, user_id, min(remaining, self.settings.session_cache_ttl_seconds))
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
        async with self.db.read() as conn:
            row = await self.users_repo.get_by_id(conn, UUID(user_id))
        if row is None:
            raise NotFound("No such user.")
        return own_user(row)

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
        user_id = str(parse_uuid(id_or_username) or "") or await self.profile_cache.get_id_for_username(id_or_username)
        if user_id:
            cached = await self.profile_cache.get(user_id)
            if cached is not None:
                return cached
        async with self.db.read(lag_ok=True, writes_of=(user_id, viewer_id)) as conn:
            if parse_uuid(id_or_username):
                row = await self.users_repo.get_by_id(conn, UUID(id_or_username))
            else:
                row = await self.users_repo.get_by_username(conn, id_or_username)
        if row is None:
            raise NotFound("No such user.")
        profile = public_user(row)
        await self.profile_cache.put(profile)
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
