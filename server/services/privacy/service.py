"""``PrivacyService``: the privacy context's one entry point for the front doors, the
CLI and the privacy worker, assembled from its parts (audit trail, erasure saga, export,
retention)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, AsyncIterator
from uuid import UUID

from kernel.settings import Settings
from server.services.privacy.accounts import Accounts
from server.services.privacy.audit import AuditTrail
from server.services.privacy.contributions import ErasureStep, ExportSection
from server.services.privacy.export import Exporter, ExportPart
from server.services.privacy.retention import Retention
from server.services.privacy.saga import ErasureSaga, PurgeReport, SagaOutcome
from storage.postgres.pool import Database

if TYPE_CHECKING:
    from server.read_models.users import OwnUser
    from server.services.users import ClientInfo

log = logging.getLogger("pulse.privacy")


class PrivacyService:
    def __init__(self, db: Database, audit: AuditTrail, accounts: Accounts, settings: Settings, *,
                 erasure_steps: list[ErasureStep], export_sections: list[ExportSection]) -> None:
        self.audit = audit
        self.erasure = ErasureSaga(db, audit, accounts, settings, erasure_steps)
        self.exporter = Exporter(audit, accounts, export_sections)
        self.retention = Retention(accounts)

    # The saga's steps and settings, replaceable (an operator's fix, a test's failing step).
    @property
    def steps(self) -> list[ErasureStep]:
        return self.erasure.steps

    @steps.setter
    def steps(self, steps: list[ErasureStep]) -> None:
        self.erasure.steps = steps

    @property
    def settings(self) -> Settings:
        return self.erasure.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.erasure.settings = settings

    # --- the account holder: export, erasure request, restore ------------------------------

    def export(self, user_id: str) -> AsyncIterator[ExportPart]:
        return self.exporter.export(user_id)

    async def request_erasure(self, user_id: str, password: str, client: "ClientInfo") -> dict[str, Any]:
        return await self.erasure.request_erasure(user_id, password, client)

    async def restore(self, login: str, password: str, client: "ClientInfo") -> tuple["OwnUser", str]:
        return await self.erasure.restore(login, password, client)

    # --- operators and the privacy worker ------------------------------------------------

    async def purge_now(self, user_id: str) -> SagaOutcome:
        return await self.erasure.purge_now(user_id)

    async def purge_user(self, uid: UUID) -> SagaOutcome | None:
        return await self.erasure.purge_user(uid)

    async def run_due_purges(self, *, limit: int = 100, wait_for_lock: float = 0.0) -> PurgeReport:
        return await self.erasure.run_due_purges(limit=limit, wait_for_lock=wait_for_lock)

    async def unfinished_sagas(self) -> list[dict[str, Any]]:
        return await self.erasure.unfinished_sagas()

    async def prune(self) -> dict[str, int]:
        return await self.retention.prune()

    async def run_periodic(self) -> None:
        """One pass of the privacy worker: due purges, then retention."""
        report = await self.run_due_purges()
        if report.stuck:
            log.error("%d erasure saga(s) stuck: %s", len(report.stuck),
                      ", ".join(f"{o.saga_id} at {o.failed_step}" for o in report.stuck))
        pruned = await self.prune()
        if any(pruned.values()):
            log.info("retention pruned %s", pruned)
