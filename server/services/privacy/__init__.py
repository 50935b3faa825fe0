"""The privacy context: audit trail, export (right of access), erasure with a recovery
window, the purge saga (right to be forgotten) and retention.

It orchestrates; the other contexts plug into it. Each context's service contributes
its own erasure steps and export sections (``erasure_steps()``, ``export_sections()``,
built from ``contributions``), ``create_app`` gathers them in order, and privacy runs
them: ordering, retries, resumption and the audit trail are its part.

- ``contributions``: what a context contributes (``ErasureStep``, ``ExportSection``).
- ``audit``: the pseudonymised audit trail.
- ``saga``: erasure request, restore, and the purge saga.
- ``export``: the export document.
- ``retention``: what the privacy worker prunes.
- ``accounts``: what privacy needs of the users context.
- ``service``: ``PrivacyService``, the entry point assembling them.

Nothing here imports another context: they import ``contributions``.
"""
from server.services.privacy.audit import AuditTrail, pseudonym
from server.services.privacy.contributions import ErasureStep, ExportSection, Page, keyset_pages, pg_keyset_pages
from server.services.privacy.export import ExportPart
from server.services.privacy.saga import FINAL_STEP, PurgeReport, SagaOutcome
from server.services.privacy.service import PrivacyService

__all__ = ["FINAL_STEP", "AuditTrail", "ErasureStep", "ExportPart", "ExportSection", "Page", "PrivacyService",
           "PurgeReport", "SagaOutcome", "keyset_pages", "pg_keyset_pages", "pseudonym"]
