"""Erasure (right to be forgotten): the request hides the account for a recovery
window, a restore within it undoes that, and then the purge saga runs every context's
erasure steps, recorded one by one, so that a failed or interrupted purge resumes where
it stopped on the next run.

The steps are contributed by the contexts (``erasure_steps()`` of their services,
gathered in ``create_app``); this module knows no other context's tables and reaches
the account only through the ``Accounts`` port of the users context.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, AsyncIterator
from uuid import UUID

import asyncpg

from kernel.errors import NotFound, StoreUnavailable, Unauthorized
from kernel.settings import Settings
from kernel.timefmt import iso, utcnow
from server.services.privacy.accounts import Accounts
from server.services.privacy.audit import AuditTrail
from server.services.privacy.contributions import ErasureStep
from storage.postgres.pool import Database
from storage.postgres.repos.privacy import ErasureSagasRepo

if TYPE_CHECKING:
    from server.read_models.users import OwnUser
    from server.services.users import ClientInfo

log = logging.getLogger("pulse.privacy")

# The last step of every saga, run here (not contributed): the users row goes (foreign
# keys cascade what is left) and the saga forgets the user id, in one transaction.
FINAL_STEP = "users.account"
# Names the "privacy worker" advisory lock: one purge run at a time across instances.
PURGE_LOCK_KEY = 0x70726976  # "priv"


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


def check_order(steps: list[ErasureStep]) -> None:
    """Unique names, none the final step's, and every ``before`` kept."""
    names = [s.name for s in steps]
    if len(set(names)) != len(names) or FINAL_STEP in names:
        raise ValueError(f"erasure step names must be unique and not {FINAL_STEP!r}: {names}")
    position = {name: i for i, name in enumerate(names)}
    for i, step in enumerate(steps):
        late = [other for other in step.before if position.get(other, len(names)) < i]
        if late:
            raise ValueError(f"erasure step {step.name!r} must run before {late}: {names}")


class ErasureSaga:
    def __init__(self, db: Database, audit: AuditTrail, accounts: Accounts, settings: Settings,
                 steps: list[ErasureStep]) -> None:
        check_order(steps)
        self.db = db
        self.audit = audit
        self.accounts = accounts
        self.settings = settings
        self.steps = list(steps)
        self.sagas_repo = ErasureSagasRepo()

    # --- erasure request and restore -------------------------------------------------------

    async def request_erasure(self, user_id: str, password: str, client: "ClientInfo") -> dict[str, Any]:
        uid = UUID(user_id)
        await self._check_password(user_id, password, client)
        purge_after = utcnow() + timedelta(days=self.settings.erasure_recovery_days)
        async with self.db.transaction() as conn:
            username = await self.accounts.username_of(conn, uid, include_pending=False)
            if username is None:
                raise NotFound("No such user.")
            token_hashes = await self._hide(conn, uid, purge_after, actor="user")
        await self.accounts.forget_hidden(user_id, username, token_hashes)
        return {"status": "pending_erasure", "purge_after": iso(purge_after)}

    async def _check_password(self, user_id: str, password: str, client: "ClientInfo") -> None:
        # Re-authentication is limited like logins (checked by the users service).
        try:
            await self.accounts.check_password(user_id, password, client)
        except Unauthorized:
            await self.audit.record("erasure.password_refused", user_id, {})
            raise

    async def _hide(self, conn: asyncpg.Connection, uid: UUID, purge_after: datetime, *, actor: str) -> list[bytes]:
        """Pending erasure, sessions revoked, event out, audited: one transaction."""
        token_hashes = await self.accounts.hide_for_erasure(conn, uid, purge_after)
        await self.audit.record("erasure.requested", uid, {"purge_after": iso(purge_after), "by": actor,
                                                           "sessions_revoked": len(token_hashes)}, conn)
        return token_hashes

    async def restore(self, login: str, password: str, client: "ClientInfo") -> tuple["OwnUser", str]:
        uid = await self.accounts.verify_credentials(login=login, password=password, client=client,
                                                     allow_pending=True)
        async with self.db.transaction() as conn:
            # Refused, with the login's one message, once a purge is under way.
            user, token = await self.accounts.restore_account(conn, uid, client, purge_started=self.sagas_repo.has_saga)
            await self.audit.record("erasure.restored", uid, {}, conn)
        await self.accounts.invalidate_profiles(str(uid))
        return user, token

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
                unfinished = await self.sagas_repo.open_user_ids(conn)
            due = list(dict.fromkeys([*unfinished, *await self.accounts.due_for_purge(utcnow(), limit)]))
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
            state = await self.accounts.erasure_state(conn, uid)
            saga = await self.sagas_repo.get_open(conn, uid)
            if state is None and saga is None:
                raise NotFound("No such user.")
            token_hashes: list[bytes] = []
            if state is not None and state["status"] != "pending_erasure":
                token_hashes = await self._hide(conn, uid, utcnow(), actor="operator")
            elif state is not None and state["purge_after"] > utcnow():
                await self.accounts.move_purge_after(conn, uid, utcnow())
                await self.audit.record("erasure.window_cut", uid, {"by": "operator"}, conn)
            username = await self.accounts.username_of(conn, uid, include_pending=True)
        if username is not None:
            await self.accounts.forget_hidden(user_id, username, token_hashes)
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
            # Locked against a concurrent restore, which takes the same lock first.
            user = await self.accounts.erasure_state(conn, uid)
            saga = await self.sagas_repo.get_open(conn, uid)
            if saga is None:
                if user is None or user["status"] != "pending_erasure" or user["purge_after"] > utcnow():
                    return None
                saga_id = await self.sagas_repo.open_saga(conn, uid, self.audit.subject(uid), step_names)
                await self.audit.record("erasure.purge_started", uid,
                                        {"saga_id": str(saga_id), "steps": step_names}, conn)
            else:
                saga_id = saga["id"]
                await self.sagas_repo.add_missing_steps(conn, saga_id, step_names)
            done = {r["step"] for r in await self.sagas_repo.steps(conn, saga_id) if r["status"] == "done"}

        for step in self.steps:
            if step.name in done:
                continue
            try:
                await step.run(uid)
            except Exception as exc:  # noqa: BLE001 - recorded, reported and retried
                return await self._step_failed(uid, saga_id, step.name, exc)
            async with self.db.transaction() as conn:
                attempts = await self.sagas_repo.mark_step_done(conn, saga_id, step.name)
                await self.audit.record("erasure.step_done", uid,
                                        {"saga_id": str(saga_id), "step": step.name, "attempts": attempts}, conn)

        try:
            async with self.db.transaction() as conn:
                await self.accounts.delete_account(conn, uid)
                await self.sagas_repo.mark_step_done(conn, saga_id, FINAL_STEP)
                await self.sagas_repo.complete(conn, saga_id)
                await self.audit.record("erasure.purged", uid, {"saga_id": str(saga_id)}, conn)
        except Exception as exc:  # noqa: BLE001
            return await self._step_failed(uid, saga_id, FINAL_STEP, exc)
        log.info("erasure saga %s completed", saga_id)
        return SagaOutcome(saga_id=str(saga_id), status="completed")

    async def _step_failed(self, uid: UUID, saga_id: UUID, step: str, exc: Exception) -> SagaOutcome:
        # The message may name rows, never personal data we did not already hold; it is
        # cleared when the saga completes.
        error = f"{type(exc).__name__}: {exc}"[:500]
        async with self.db.transaction() as conn:
            attempts = await self.sagas_repo.mark_step_failed(conn, saga_id, step, error)
            details = {"saga_id": str(saga_id), "step": step, "attempts": attempts, "error": type(exc).__name__}
            await self.audit.record("erasure.step_failed", uid, details, conn)
            stuck = attempts >= self.settings.purge_max_attempts
            if stuck:
                await self.sagas_repo.set_status(conn, saga_id, "stuck")
                await self.audit.record("erasure.stuck", uid, details, conn)
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
            rows = await self.sagas_repo.list_unfinished(conn)
        return [{"saga_id": str(r["id"]), "status": r["status"], "started_at": iso(r["started_at"]),
                 "steps": r["steps"]} for r in rows]
