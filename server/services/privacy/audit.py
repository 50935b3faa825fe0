"""The audit trail: an append-only log of what was done with whose data, keyed by a
pseudonym (a keyed hash) so that it can outlive the account it is about."""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator
from uuid import UUID

import asyncpg

from kernel.settings import Settings
from kernel.timefmt import iso
from server.services.privacy.contributions import Page, keyset_pages
from storage.postgres.pool import Database
from storage.postgres.repos.privacy import AuditRepo

if TYPE_CHECKING:
    from server.services.users import ClientInfo

log = logging.getLogger("pulse.privacy")


def pseudonym(key: str, value: str) -> str:
    """Keyed hash of a user id or login: stable for the operator holding the key,
    meaningless without it."""
    return hmac.new(key.encode(), value.strip().lower().encode(), hashlib.sha256).hexdigest()


class AuditTrail:
    """Also what the users context reports its events to (registrations, failed logins),
    given to ``UsersService`` at construction."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.audit_repo = AuditRepo()

    def subject(self, value: str | UUID) -> str:
        return pseudonym(self.settings.audit_key, str(value))

    async def record(self, action: str, subject_value: str | UUID, details: dict[str, Any] | None = None,
                     conn: asyncpg.Connection | None = None) -> None:
        """Append an entry (inside the caller's transaction when given one). ``details``
        must carry no personal data: ids of sagas and steps, counts, timestamps."""
        subject = self.subject(subject_value)
        if conn is not None:
            await self.audit_repo.append(conn, action, subject, details or {})
            return
        async with self.db.connection() as own:
            await self.audit_repo.append(own, action, subject, details or {})

    async def record_registration(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        await self.record("user.registered", user_id, {}, conn)

    async def record_login_failure(self, login: str, client: "ClientInfo") -> None:
        # Keyed by the login string as typed (it may name no account); no address kept.
        try:
            await self.record("auth.login_failed", login, {})
        except Exception as exc:  # noqa: BLE001 - the 401 must not become a 500
            log.error("could not audit a failed login: %s", exc)

    def pages_for(self, subject_values: list[str | UUID]) -> AsyncIterator[Page]:
        """The entries about any of these (a user id, their email, their username), for
        their export."""
        subjects = [self.subject(v) for v in subject_values]

        async def fetch(after: int, limit: int) -> list[asyncpg.Record]:
            async with self.db.read() as conn:
                return await self.audit_repo.page_for_subjects(conn, subjects, after, limit)

        return keyset_pages(fetch, 0, lambda r: r["id"],
                            lambda r: {"at": iso(r["at"]), "action": r["action"], "details": r["details"]})
