"""The privacy context: audit trail, export (right of access), erasure with a recovery
window, the purge saga (right to be forgotten) and retention.

It is a framework the other contexts plug into: each contributes erasure steps and
export sections in ``server.services.privacy_registry`` (one function each, like the
event consumers). This module runs them; it knows no other context's tables.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Awaitable, Callable
from uuid import UUID

import asyncpg

from kernel.errors import NotFound, StoreUnavailable, Unauthorized
from kernel.settings import Settings
from kernel.timefmt import iso, utcnow
from server.services.ports import DISCONNECT_USER, Pusher
from server.services.users import BAD_CREDENTIALS, ClientInfo, UsersService, own_user
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.privacy import AuditRepo, ErasureSagasRepo
from storage.postgres.repos.sessions import SessionsRepo
from storage.postgres.repos.users import UsersRepo

log = logging.getLogger("pulse.privacy")

# The last step of every saga, run by this module (not contributed): it deletes the
# users row (foreign keys cascade what is left) and forgets the user id.
FINAL_STEP = "users.account"
# Names the "privacy worker" advisory lock: one purge run at a time across instances.
PURGE_LOCK_KEY = 0x70726976  # "priv"
EXPORT_PAGE_SIZE = 500

Page = list[dict[str, Any]]


@dataclass(frozen=True)
class ErasureStep:
    """One idempotent part of a purge: removes what one context holds about the user.
    ``run`` may be called again after a failure or a crash, also after it succeeded once
    without being recorded: it must then do nothing harmful (e.g. decrement counters only
    for rows it actually deletes, in the same transaction)."""

    name: str
    run: Callable[[UUID], Awaitable[None]]


@dataclass(frozen=True)
class ExportSection:
    """One array of the export document, read page by page from its store (never all
    at once): ``pages(user_id)`` yields lists of JSON-ready dicts."""

    name: str
    pages: Callable[[UUID], AsyncIterator[Page]]


@dataclass(frozen=True)
class ExportPart:
    """What the export endpoint writes, in order: an object or a paged array."""

    name: str
    value: Any = None
    pages: AsyncIterator[Page] | None = None


@dataclass
class SagaOutcome:
    saga_id: str
    status: str  # completed, running (a step failed, retried next run), stuck
    failed_step: str | None = None
    error: str | None = None


@dataclass
class PurgeReport:
    completed: list[str] = field(default_factory=list)  # saga ids
    retrying: list[SagaOutcome] = field(default_factory=list)
    stuck: list[SagaOutcome] = field(default_factory=list)
    skipped: bool = False  # another run held the lock


def pseudonym(key: str, value: str) -> str:
    """Keyed hash of a user id or login: stable for the operator holding the key,
    meaningless without it."""
    return hmac.new(key.encode(), value.strip().lower().encode(), hashlib.sha256).hexdigest()


async def keyset_pages(fetch: Callable[[Any, int], Awaitable[list[Any]]], first_key: Any,
                       key_of: Callable[[Any], Any], render: Callable[[Any], dict[str, Any]],
                       page_size: int = EXPORT_PAGE_SIZE) -> AsyncIterator[Page]:
    """Pages of ``fetch(after_key, limit)`` until a short page: the generic reader of
    export sections (each call takes a pooled connection only for one page)."""
    after = first_key
    while True:
        rows = await fetch(after, page_size)
        if rows:
            yield [render(r) for r in rows]
            after = key_of(rows[-1])
        if len(rows) < page_size:
            return


class PrivacyService:
    def __init__(self, db: Database, users: UsersService, settings: Settings, pusher: Pusher | None = None) -> None:
        self.db = db
        self.pusher = pusher
        self.users_service = users
        self.settings = settings
        self.audit_repo = AuditRepo()
        self.sagas = ErasureSagasRepo()
        self.users = UsersRepo()
        self.sessions = SessionsRepo()
        self.outbox = OutboxRepo()
        # Filled by ``privacy_registry`` once every service exists.
        self.steps: list[ErasureStep] = []
        self.sections: list[ExportSection] = []

    def install(self, steps: list[ErasureStep], sections: list[ExportSection]) -> None:
        names = [s.name for s in steps]
        if len(set(names)) != len(names) or FINAL_STEP in names:
            raise ValueError(f"erasure step names must be unique and not {FINAL_STEP!r}: {names}")
        self.steps = list(steps)
        self.sections = list(sections)
        # The users context reports its events here.
        self.users_service.on_login_failure = self.record_login_failure
        self.users_service.on_registered = self.record_registration

    # --- audit ------------------------------------------------------------------------

    def subject(self, value: str | UUID) -> str:
        return pseudonym(self.settings.audit_key, str(value))

    async def audit(self, action: str, subject_value: str | UUID, details: dict[str, Any] | None = None,
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
        await self.audit("user.registered", user_id, {}, conn)

    async def record_login_failure(self, login: str, client: ClientInfo) -> None:
        # Keyed by the login string as typed (it may name no account); no address kept.
        try:
            await self.audit("auth.login_failed", login, {})
        except Exception as exc:  # noqa: BLE001 - the 401 must not become a 500
            log.error("could not audit a failed login: %s", exc)

    # --- erasure request and restore -------------------------------------------------------

    async def request_erasure(self, user_id: str, password: str, client: ClientInfo) -> dict[str, Any]:
        uid = UUID(user_id)
        await self._check_password(user_id, password, client)
        purge_after = utcnow() + timedelta(days=self.settings.erasure_recovery_days)
        async with self.db.transaction() as conn:
            row = await self.users.get_by_id(conn, uid)
            if row is None:
                raise NotFound("No such user.")
            token_hashes = await self._hide(conn, uid, purge_after, actor="user")
        await self._forget_cached(user_id, row["username"], token_hashes)
        return {"status": "pending_erasure", "purge_after": iso(purge_after)}

    async def _check_password(self, user_id: str, password: str, client: ClientInfo) -> None:
        # Re-authentication is limited like logins (checked by the users service).
        try:
            await self.users_service.check_password(user_id, password, client)
        except Unauthorized:
            await self.audit("erasure.password_refused", user_id, {})
            raise

    async def _hide(self, conn: asyncpg.Connection, uid: UUID, purge_after: datetime, *, actor: str) -> list[bytes]:
        """Pending erasure, sessions revoked, event out: one transaction."""
        await self.users.mark_pending_erasure(conn, uid, purge_after)
        token_hashes = await self.users_service.revoke_all_sessions(conn, str(uid))
        # Consumers: realtime disconnects the user's sockets and drops presence; feeds
        # and follower lists filter on users.status.
        await self.outbox.add(conn, "user.erasure_requested", {"user_id": str(uid)})
        await self.audit("erasure.requested", uid, {"purge_after": iso(purge_after), "by": actor,
                                                    "sessions_revoked": len(token_hashes)}, conn)
        return token_hashes

    async def _forget_cached(self, user_id: str, username: str, token_hashes: list[bytes]) -> None:
        await self.users_service.sessions_cache.drop(*token_hashes)
        await self.users_service.profile_cache.invalidate(user_id)
        await self.users_service.profile_cache.forget_username(username)
        if self.pusher is not None:
            # Every instance closes the user's sockets now. Best effort: with Redis down
            # the sockets stay open until they reconnect, and a reconnect is refused.
            try:
                await self.pusher.push([user_id], DISCONNECT_USER, {}, replay=False)
            except Exception as exc:  # noqa: BLE001
                log.error("could not disconnect the sockets of a user pending erasure: %s", exc)

    async def restore(self, login: str, password: str, client: ClientInfo) -> tuple[dict[str, Any], str]:
        uid = await self.users_service.verify_credentials(login=login, password=password, client=client,
                                                          allow_pending=True)
        async with self.db.transaction() as conn:
            row = await self.sagas.lock_user_for_purge(conn, uid)
            restorable = (
                row is not None and row["status"] == "pending_erasure" and row["purge_after"] is not None
                and row["purge_after"] > utcnow() and not await self.sagas.has_saga(conn, uid)
            )
            if not restorable:
                # Active accounts, expired windows and purges under way: the one message.
                raise Unauthorized(BAD_CREDENTIALS)
            await self.users.restore(conn, uid)
            token = await self.users_service.open_session(conn, uid, client)
            await self.outbox.add(conn, "user.erasure_restored", {"user_id": str(uid)})
            await self.audit("erasure.restored", uid, {}, conn)
            user = await self.users.get_by_id(conn, uid)
        await self.users_service.profile_cache.invalidate(str(uid))
        return own_user(user), token

    # --- export -----------------------------------------------------------------------

    async def export(self, user_id: str) -> AsyncIterator[ExportPart]:
        """The export document, part by part; arrays are read page by page."""
        uid = UUID(user_id)
        async with self.db.read() as conn:
            row = await self.users.get_by_id(conn, uid)
        if row is None:
            raise NotFound("No such user.")
        await self.audit("privacy.exported", uid, {"sections": [s.name for s in self.sections]})
        yield ExportPart("format", "pulse-export/1")
        yield ExportPart("generated_at", iso(utcnow()))
        yield ExportPart("account", {**own_user(row), "status": row["status"]})
        yield ExportPart("sessions", pages=self._session_pages(uid))
        subjects = [self.subject(uid), self.subject(row["email"]), self.subject(row["username"])]
        yield ExportPart("audit", pages=self._audit_pages(subjects))
        for section in self.sections:
            yield ExportPart(section.name, pages=section.pages(uid))

    async def _session_pages(self, uid: UUID) -> AsyncIterator[Page]:
        async with self.db.read() as conn:
            rows = await self.sessions.list_for_user(conn, uid)
        # Token hashes are secrets and never leave the server.
        yield [{"created_at": iso(r["created_at"]), "expires_at": iso(r["expires_at"]),
                "user_agent": r["user_agent"], "client_address": r["client_address"]} for r in rows]

    def _audit_pages(self, subjects: list[str]) -> AsyncIterator[Page]:
        async def fetch(after: int, limit: int) -> list[asyncpg.Record]:
            async with self.db.read() as conn:
                return await self.audit_repo.page_for_subjects(conn, subjects, after, limit)

        return keyset_pages(fetch, 0, lambda r: r["id"],
                            lambda r: {"at": iso(r["at"]), "action": r["action"], "details": r["details"]})

    # --- purge saga -------------------------------------------------------------------

    @asynccontextmanager
    async def _purge_lock(self, wait_seconds: float) -> AsyncIterator[bool]:
        """One purge run at a time across instances (a session advisory lock held on one
        pooled connection); yields False when another run kept it ``wait_seconds``."""
        async with self.db.session() as lock_conn:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_seconds
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK_KEY):
                if loop.time() >= deadline:
                    yield False
                    return
                await asyncio.sleep(0.2)
            try:
                yield True
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK_KEY)

    async def run_due_purges(self, *, limit: int = 100, wait_for_lock: float = 0.0) -> PurgeReport:
        """Purge every user whose window is over and resume unfinished sagas, one run at a
        time across instances. ``wait_for_lock``: seconds to wait for another run."""
        report = PurgeReport()
        async with self._purge_lock(wait_for_lock) as locked:
            if not locked:
                report.skipped = True
                return report
            async with self.db.read() as conn:
                due = await self.sagas.due_user_ids(conn, utcnow(), limit)
            for uid in due:
                outcome = await self.purge_user(uid)
                if outcome is None:
                    continue
                if outcome.status == "completed":
                    report.completed.append(outcome.saga_id)
                elif outcome.status == "stuck":
                    report.stuck.append(outcome)
                else:
                    report.retrying.append(outcome)
        return report

    async def purge_now(self, user_id: str) -> SagaOutcome:
        """Operator action: purge one user at once, whatever their window (an active
        account is first hidden exactly as by its own erasure request)."""
        uid = UUID(user_id)
        async with self.db.transaction() as conn:
            row = await self.sagas.lock_user_for_purge(conn, uid)
            saga = await self.sagas.get_open(conn, uid)
            if row is None and saga is None:
                raise NotFound("No such user.")
            token_hashes: list[bytes] = []
            if row is not None and row["status"] != "pending_erasure":
                token_hashes = await self._hide(conn, uid, utcnow(), actor="operator")
            elif row is not None and row["purge_after"] > utcnow():
                await self.users.mark_pending_erasure(conn, uid, utcnow())
                await self.audit("erasure.window_cut", uid, {"by": "operator"}, conn)
            profile = await self.users.get_by_id(conn, uid, include_pending=True)
        if profile is not None:
            await self._forget_cached(user_id, profile["username"], token_hashes)
        async with self._purge_lock(wait_seconds=60.0) as locked:
            if not locked:
                raise StoreUnavailable("postgres", "Another purge run holds the lock; try again.")
            outcome = await self.purge_user(uid)
        assert outcome is not None
        return outcome

    async def purge_user(self, uid: UUID) -> SagaOutcome | None:
        """Run (or resume) the saga of one due user; None when there is nothing to do
        (restored meanwhile, or not due)."""
        step_names = [s.name for s in self.steps] + [FINAL_STEP]
        async with self.db.transaction() as conn:
            user = await self.sagas.lock_user_for_purge(conn, uid)
            saga = await self.sagas.get_open(conn, uid)
            if saga is None:
                if user is None or user["status"] != "pending_erasure" or user["purge_after"] > utcnow():
                    return None
                saga_id = await self.sagas.open_saga(conn, uid, self.subject(uid), step_names)
                await self.audit("erasure.purge_started", uid, {"saga_id": str(saga_id), "steps": step_names}, conn)
            else:
                saga_id = saga["id"]
                await self.sagas.add_missing_steps(conn, saga_id, step_names)
            done = {r["step"] for r in await self.sagas.steps(conn, saga_id) if r["status"] == "done"}

        for step in self.steps:
            if step.name in done:
                continue
            try:
                await step.run(uid)
            except Exception as exc:  # noqa: BLE001 - recorded, reported and retried
                return await self._step_failed(uid, saga_id, step.name, exc)
            async with self.db.transaction() as conn:
                attempts = await self.sagas.mark_step_done(conn, saga_id, step.name)
                await self.audit("erasure.step_done", uid,
                                 {"saga_id": str(saga_id), "step": step.name, "attempts": attempts}, conn)

        try:
            async with self.db.transaction() as conn:
                await self.sagas.delete_user(conn, uid)
                await self.sagas.mark_step_done(conn, saga_id, FINAL_STEP)
                await self.sagas.complete(conn, saga_id)
                await self.audit("erasure.purged", uid, {"saga_id": str(saga_id)}, conn)
                await self.outbox.add(conn, "user.purged", {"user_id": str(uid)})
        except Exception as exc:  # noqa: BLE001
            return await self._step_failed(uid, saga_id, FINAL_STEP, exc)
        log.info("erasure saga %s completed", saga_id)
        return SagaOutcome(saga_id=str(saga_id), status="completed")

    async def _step_failed(self, uid: UUID, saga_id: UUID, step: str, exc: Exception) -> SagaOutcome:
        # The message may name rows, never personal data we did not already hold; it is
        # cleared when the saga completes.
        error = f"{type(exc).__name__}: {exc}"[:500]
        async with self.db.transaction() as conn:
            attempts = await self.sagas.mark_step_failed(conn, saga_id, step, error)
            details = {"saga_id": str(saga_id), "step": step, "attempts": attempts, "error": type(exc).__name__}
            await self.audit("erasure.step_failed", uid, details, conn)
            stuck = attempts >= self.settings.purge_max_attempts
            if stuck:
                await self.sagas.set_status(conn, saga_id, "stuck")
                await self.audit("erasure.stuck", uid, details, conn)
        if stuck:
            # The account stays hidden and locked (no login, no restore) until an operator
            # fixes the cause; every run retries it.
            log.error("erasure saga %s is stuck at step %s after %d attempts: %s", saga_id, step, attempts, error)
        else:
            log.warning("erasure saga %s: step %s failed (attempt %d), retried next run: %s",
                        saga_id, step, attempts, error)
        return SagaOutcome(saga_id=str(saga_id), status="stuck" if stuck else "running", failed_step=step,
                           error=error)

    async def unfinished_sagas(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await self.sagas.list_unfinished(conn)
        return [{"saga_id": str(r["id"]), "status": r["status"], "started_at": iso(r["started_at"]),
                 "steps": r["steps"]} for r in rows]

    # --- retention --------------------------------------------------------------------

    async def prune(self) -> dict[str, int]:
        """Retention owned here: expired sessions. (Published outbox rows and
        processed-event ids are pruned by the event bus, ``event_retention_days``.)"""
        async with self.db.connection() as conn:
            return {"sessions": await self.sessions.delete_expired(conn)}

    async def run_periodic(self) -> None:
        """One pass of the privacy worker: due purges, then retention."""
        report = await self.run_due_purges()
        if report.stuck:
            log.error("%d erasure saga(s) stuck: %s", len(report.stuck),
                      ", ".join(f"{o.saga_id} at {o.failed_step}" for o in report.stuck))
        pruned = await self.prune()
        if any(pruned.values()):
            log.info("retention pruned %s", pruned)
