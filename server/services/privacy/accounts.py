"""What the privacy context needs of the users context (``UsersService`` provides it):
privacy changes an account only through these, never through the users' tables or
caches, and inside its own transactions where the audit entry must commit with the change."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Protocol
from uuid import UUID

if TYPE_CHECKING:
    import asyncpg

    from server.read_models.users import OwnUser
    from server.services.privacy.contributions import Page
    from server.services.users import ClientInfo


class Accounts(Protocol):
    async def check_password(self, user_id: str, password: str, client: "ClientInfo") -> None:
        """Re-authentication of a signed-in user (Unauthorized when wrong)."""

    async def verify_credentials(self, *, login: str, password: str, client: "ClientInfo",
                                 allow_pending: bool) -> UUID:
        """The id of the account the credentials open (Unauthorized otherwise)."""

    async def erasure_state(self, conn: "asyncpg.Connection", user_id: UUID) -> "asyncpg.Record | None":
        """(id, status, purge_after) of the account, locked for the caller's transaction."""

    async def username_of(self, conn: "asyncpg.Connection", user_id: UUID, *, include_pending: bool) -> str | None:
        """The account's username (None: no such account, or hidden and not asked for)."""

    async def hide_for_erasure(self, conn: "asyncpg.Connection", user_id: UUID, purge_after: datetime) -> list[bytes]:
        """Pending erasure until ``purge_after``, every session revoked, the event out
        (in the caller's transaction); returns the revoked sessions' token hashes."""

    async def move_purge_after(self, conn: "asyncpg.Connection", user_id: UUID, purge_after: datetime) -> None:
        """A pending account's recovery window ends at ``purge_after`` instead."""

    async def forget_hidden(self, user_id: str, username: str, token_hashes: list[bytes]) -> None:
        """After the commit of a hide: caches dropped, the user's sockets closed."""

    async def restore_account(self, conn: "asyncpg.Connection", user_id: UUID, client: "ClientInfo", *,
                              purge_started: Callable[["asyncpg.Connection", UUID], Awaitable[bool]],
                              ) -> tuple["OwnUser", str]:
        """Active again with a new session (own user dict, token), if its window is open
        and ``purge_started`` says no; Unauthorized (the login message) otherwise."""

    async def invalidate_profiles(self, *user_ids: str) -> None:
        """After a commit that changed the accounts."""

    async def due_for_purge(self, now: datetime, limit: int) -> list[UUID]:
        """Accounts whose recovery window is over, the oldest first."""

    async def delete_account(self, conn: "asyncpg.Connection", user_id: UUID) -> None:
        """The saga's final step: the users row goes (what is left cascades)."""

    async def account_for_export(self, user_id: UUID) -> dict[str, Any] | None:
        """The own user dict with the account's status (None: no active account)."""

    def session_pages(self, user_id: UUID) -> AsyncIterator["Page"]:
        """The account's sessions for the export (never their token hashes)."""

    async def delete_expired_sessions(self) -> int:
        """Retention: expired sessions go."""
