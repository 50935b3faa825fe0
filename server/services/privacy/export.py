"""The export (right of access): one JSON document of everything Pulse holds about a
user, written part by part, its arrays read page by page.

The document: format and time, the account and its sessions (the users context), the
audit entries about the user, then every context's sections (``export_sections()`` of
their services, gathered in ``create_app``) in their order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator
from uuid import UUID

from kernel.errors import NotFound
from kernel.timefmt import iso, utcnow
from server.services.privacy.accounts import Accounts
from server.services.privacy.audit import AuditTrail
from server.services.privacy.contributions import ExportSection, Page

EXPORT_FORMAT = "pulse-export/1"


@dataclass(frozen=True)
class ExportPart:
    """What the export endpoint writes, in order: an object or a paged array."""

    name: str
    value: Any = None
    pages: AsyncIterator[Page] | None = None


class Exporter:
    def __init__(self, audit: AuditTrail, accounts: Accounts, sections: list[ExportSection]) -> None:
        names = [s.name for s in sections]
        if len(set(names)) != len(names) or {"format", "generated_at", "account", "sessions", "audit"} & set(names):
            raise ValueError(f"export section names must be unique and not the document's own: {names}")
        self.audit = audit
        self.accounts = accounts
        self.sections = list(sections)

    async def export(self, user_id: str) -> AsyncIterator[ExportPart]:
        """The export document, part by part; arrays are read page by page."""
        uid = UUID(user_id)
        account = await self.accounts.account_for_export(uid)
        if account is None:
            raise NotFound("No such user.")
        await self.audit.record("privacy.exported", uid, {"sections": [s.name for s in self.sections]})
        yield ExportPart("format", EXPORT_FORMAT)
        yield ExportPart("generated_at", iso(utcnow()))
        yield ExportPart("account", account)
        yield ExportPart("sessions", pages=self.accounts.session_pages(uid))
        # Failed logins are recorded under the login as typed: the email or the username.
        yield ExportPart("audit", pages=self.audit.pages_for([uid, account["email"], account["username"]]))
        for section in self.sections:
            yield ExportPart(section.name, pages=section.pages(uid))
