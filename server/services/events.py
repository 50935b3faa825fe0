"""The events context: events, RSVPs, capacity.

A ``going`` RSVP never overbooks an event: every RSVP change locks the event row
(``SELECT ... FOR UPDATE``) for its transaction, checks the capacity against the exact
``going_count`` and changes both together.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, get_args
from uuid import UUID

import asyncpg

from kernel.cursors import Cursors, page
from kernel.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from kernel.ids import parse_uuid
from kernel.timefmt import iso, utcnow
from server.bus.catalogue import EVENT_CANCELLED, EVENT_RSVP
from server.read_models.events import AttendeeList, Event, EventList, RsvpState, RsvpStatus
from server.services.privacy.contributions import ErasureStep, ExportSection, pg_keyset_pages
from server.services.users import UsersService
from storage.postgres.pool import Database
from storage.postgres.repos.events import EventsRepo, RsvpsRepo
from storage.postgres.repos.outbox import OutboxRepo

RSVP_STATUSES: tuple[str, ...] = get_args(RsvpStatus)
NO_SUCH_EVENT = "No such event."


def event_dict(row: asyncpg.Record, my_rsvp: str | None) -> Event:
    return {
        "id": str(row["id"]),
        "host": {"id": str(row["host_id"]), "username": row["host_username"],
                 "display_name": row["host_display_name"]},
        "title": row["title"],
        "description": row["description"],
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "location": row["location"],
        "capacity": row["capacity"],
        "going_count": row["going_count"],
        "my_rsvp": my_rsvp,
    }


def _check_times(starts_at: datetime, ends_at: datetime | None) -> None:
    if ends_at is not None and ends_at < starts_at:
        raise ValidationFailed("The event cannot end before it starts.",
                               [FieldError("ends_at", "must not be before starts_at")])


def _event_id(value: str) -> UUID:
    event_id = parse_uuid(value)
    if event_id is None:
        raise NotFound(NO_SUCH_EVENT)
    return event_id


class EventsService:
    def __init__(self, db: Database, users: UsersService, *, cursors: Cursors) -> None:
        self.db = db
        self.cursors = cursors
        self.users_service = users
        self.events_repo = EventsRepo()
        self.rsvps_repo = RsvpsRepo()
        self.outbox_repo = OutboxRepo()

    # --- events ---------------------------------------------------------------------

    async def create(self, host_id: str, fields: dict[str, Any]) -> Event:
        _check_times(fields["starts_at"], fields.get("ends_at"))
        async with self.db.transaction(writes_of=[host_id]) as conn:
            event_id = await self.events_repo.insert(
                conn, host_id=UUID(host_id), title=fields["title"], description=fields.get("description"),
                starts_at=fields["starts_at"], ends_at=fields.get("ends_at"), location=fields.get("location"),
                capacity=fields.get("capacity"),
            )
            row = await self.events_repo.get(conn, event_id)
        if row is None:  # the host was erased between authentication and now
            raise NotFound("No such user.")
        return event_dict(row, None)

    async def get(self, viewer_id: str, event_id: str) -> Event:
        eid = _event_id(event_id)
        async with self.db.read() as conn:
            row = await self.events_repo.get(conn, eid)
            if row is None:
                raise NotFound(NO_SUCH_EVENT)
            my_rsvp = await self.rsvps_repo.get_status(conn, eid, UUID(viewer_id))
        return event_dict(row, my_rsvp)

    async def list_upcoming(
        self, viewer_id: str, *, start: datetime | None, end: datetime | None, limit: int, cursor: str | None,
    ) -> EventList:
        start = start or utcnow()
        if end is not None and end < start:
            raise ValidationFailed("`to` is before `from`.", [FieldError("to", "must not be before from")])
        after = self.cursors.decode(cursor, datetime, UUID)
        async with self.db.read(lag_ok=True, writes_of=[viewer_id]) as conn:
            rows = await self.events_repo.list_upcoming(conn, start=start, end=end, after=after, limit=limit + 1)
            shown = [r["id"] for r in rows[:limit]]
            mine = await self.rsvps_repo.get_statuses(conn, shown, UUID(viewer_id)) if shown else {}
        return page(rows, limit, lambda r: self.cursors.encode(r["starts_at"], r["id"]),
                    lambda r: event_dict(r, mine.get(r["id"])))

    async def update(self, user_id: str, event_id: str, changes: dict[str, Any]) -> Event:
        eid = _event_id(event_id)
        for required in ("title", "starts_at"):
            if required in changes and changes[required] is None:
                raise ValidationFailed("The request body is not valid.", [FieldError(required, "cannot be null")])
        async with self.db.transaction(writes_of=[user_id]) as conn:
            current = await self._lock_as_host(conn, eid, user_id, "Only the host can change an event.")
            # Checked against the stored values the change leaves in place.
            _check_times(changes.get("starts_at", current["starts_at"]),
                         changes["ends_at"] if "ends_at" in changes else current["ends_at"])
            capacity = changes.get("capacity", current["capacity"])
            if capacity is not None and capacity < current["going_count"]:
                raise Conflict(f"{current['going_count']} people are already going; "
                               "the capacity cannot be lower than that.")
            if changes:
                await self.events_repo.update(conn, eid, changes)
            row = await self.events_repo.get(conn, eid)
            my_rsvp = await self.rsvps_repo.get_status(conn, eid, UUID(user_id))
        return event_dict(row, my_rsvp)

    async def _lock_as_host(self, conn: asyncpg.Connection, eid: UUID, user_id: str,
                            forbidden: str) -> asyncpg.Record:
        """The event's row, locked for this transaction; 404 if none, 403 unless hosted by the user."""
        current = await self.events_repo.lock(conn, eid)
        if current is None:
            raise NotFound(NO_SUCH_EVENT)
        if str(current["host_id"]) != user_id:
            raise Forbidden(forbidden)
        return current

    async def cancel(self, user_id: str, event_id: str) -> None:
        """Deletes the event (host only); attendees hear of it through ``event.cancelled``."""
        eid = _event_id(event_id)
        async with self.db.transaction(writes_of=[user_id]) as conn:
            current = await self._lock_as_host(conn, eid, user_id, "Only the host can cancel an event.")
            attendee_ids = await self.rsvps_repo.attendee_ids(conn, eid)
            await self.events_repo.delete(conn, eid)
            await self.outbox_repo.add(conn, EVENT_CANCELLED, {
                "event_id": str(eid), "host_id": user_id, "title": current["title"],
                "attendee_ids": [str(a) for a in attendee_ids if str(a) != user_id],
            })

    # --- RSVPs ----------------------------------------------------------------------

    async def rsvp(self, user_id: str, event_id: str, status: str) -> RsvpState:
        if status not in RSVP_STATUSES:
            raise ValidationFailed("The request body is not valid.",
                                   [FieldError("status", "must be one of " + ", ".join(RSVP_STATUSES))])
        eid, uid = _event_id(event_id), UUID(user_id)
        async with self.db.transaction(writes_of=[user_id]) as conn:
            event = await self.events_repo.lock(conn, eid)
            if event is None:
                raise NotFound(NO_SUCH_EVENT)
            previous = await self.rsvps_repo.get_status(conn, eid, uid)
            going_count = event["going_count"]
            if previous == status:
                return {"status": status, "going_count": going_count}
            delta = (status == "going") - (previous == "going")
            if delta > 0 and event["capacity"] is not None and going_count >= event["capacity"]:
                raise Conflict("The event is full.")
            if delta:
                going_count = await self.rsvps_repo.upsert_counting_going(conn, eid, uid, status, delta)
            else:
                await self.rsvps_repo.upsert(conn, eid, uid, status)
            await self.outbox_repo.add(conn, EVENT_RSVP, {
                "event_id": str(eid), "host_id": str(event["host_id"]), "actor_id": user_id, "status": status,
            })
        return {"status": status, "going_count": going_count}

    async def withdraw_rsvp(self, user_id: str, event_id: str) -> None:
        """Removes the caller's RSVP (idempotent); a ``going`` one frees its seat."""
        eid, uid = _event_id(event_id), UUID(user_id)
        async with self.db.transaction(writes_of=[user_id]) as conn:
            event = await self.events_repo.lock(conn, eid)
            if event is None:
                raise NotFound(NO_SUCH_EVENT)
            previous = await self.rsvps_repo.delete(conn, eid, uid)
            if previous == "going":
                await self.events_repo.add_to_going_count(conn, eid, -1)

    async def attendees(self, event_id: str, *, limit: int, cursor: str | None,
                        viewer_id: str | None = None) -> AttendeeList:
        eid = _event_id(event_id)
        after = self.cursors.decode(cursor, datetime, UUID)
        async with self.db.read(lag_ok=True, writes_of=[viewer_id]) as conn:
            if await self.events_repo.get(conn, eid) is None:
                raise NotFound(NO_SUCH_EVENT)
            rows = await self.rsvps_repo.list_attendees(conn, eid, after=after, limit=limit + 1)
        result = page(rows, limit, lambda r: self.cursors.encode(r["created_at"], r["user_id"]))
        profiles = await self.users_service.get_public_many([str(r["user_id"]) for r in result["items"]])
        result["items"] = [{"user": profiles[str(r["user_id"])], "status": r["status"]}
                           for r in result["items"] if str(r["user_id"]) in profiles]
        return result

    # --- erasure and export (for the privacy context) ----------------------------------

    def erasure_steps(self) -> list[ErasureStep]:
        async def rsvps(uid: UUID) -> None:
            # Seats freed: going counts of others' events stay exact.
            async with self.db.transaction() as conn:
                await self.rsvps_repo.delete_by_user(conn, uid)

        async def hosted(uid: UUID) -> None:
            # Each hosted event is cancelled as its host would: attendees are notified
            # (event.cancelled), one transaction per event.
            while True:
                async with self.db.read() as conn:
                    ids = await self.events_repo.ids_by_host(conn, uid, 100)
                for event_id in ids:
                    async with self.db.transaction() as conn:
                        attendee_ids = await self.rsvps_repo.attendee_ids(conn, event_id)
                        title = await self.events_repo.delete_returning_title(conn, event_id)
                        if title is not None:
                            await self.outbox_repo.add(conn, EVENT_CANCELLED, {
                                # No host: the event must not name the user being erased.
                                "event_id": str(event_id), "host_id": None, "title": title,
                                "attendee_ids": [str(a) for a in attendee_ids if a != uid],
                            })
                if len(ids) < 100:
                    return

        return [ErasureStep("events.rsvps", rsvps), ErasureStep("events.hosted", hosted)]

    def export_sections(self) -> list[ExportSection]:
        return [
            ExportSection("events_hosted", pg_keyset_pages(self.db, self.events_repo.page_by_host, lambda r: {
                "id": str(r["id"]), "title": r["title"], "description": r["description"],
                "starts_at": iso(r["starts_at"]), "ends_at": iso(r["ends_at"]), "location": r["location"],
                "capacity": r["capacity"], "going_count": r["going_count"], "created_at": iso(r["created_at"])})),
            ExportSection("rsvps", pg_keyset_pages(self.db, self.rsvps_repo.page_by_user, lambda r: {
                "event_id": str(r["event_id"]), "event_title": r["title"], "status": r["status"],
                "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}, id_column="event_id")),
        ]
