"""REST: events and RSVPs."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router
from api.models.common import ListQuery
from api.models.events import EventIn, EventPatchIn, EventsQuery, RsvpIn
from server.read_models.events import AttendeeList, Event, EventList, RsvpState

router = Router("events")


@router.route("POST", "/events", name="events.create", body=EventIn, response=Event, status=201,
              errors=(400, 401, 413, 415))
async def create_event(request: web.Request, call: Call[EventIn, None]):
    """Host an event."""
    return await call.services.events.create(call.user_id, call.body.model_dump())


@router.route("GET", "/events", name="events.list", query=EventsQuery, response=EventList, errors=(400, 401))
async def list_events(request: web.Request, call: Call[None, EventsQuery]):
    """Upcoming events (from now, or `from`, up to `to`), soonest first."""
    q = call.query
    return await call.services.events.list_upcoming(call.user_id, start=q.from_, end=q.to, limit=q.limit,
                                                    cursor=q.cursor)


@router.route("GET", "/events/{event_id}", name="events.get", response=Event, errors=(401, 404))
async def get_event(request: web.Request, call: Call):
    """One event, with the caller's RSVP."""
    return await call.services.events.get(call.user_id, request.match_info["event_id"])


@router.route("PATCH", "/events/{event_id}", name="events.update", body=EventPatchIn, response=Event,
              errors=(400, 401, 403, 404, 409, 415))
async def update_event(request: web.Request, call: Call[EventPatchIn, None]):
    """Change an event (host only)."""
    return await call.services.events.update(call.user_id, request.match_info["event_id"],
                                             call.body.model_dump(exclude_unset=True))


@router.route("DELETE", "/events/{event_id}", name="events.delete", status=204, errors=(401, 403, 404))
async def delete_event(request: web.Request, call: Call):
    """Cancel an event (host only); attendees are notified."""
    await call.services.events.cancel(call.user_id, request.match_info["event_id"])
    return None


@router.route("PUT", "/events/{event_id}/rsvp", name="events.rsvp", body=RsvpIn, response=RsvpState,
              errors=(400, 401, 404, 409, 415))
async def rsvp(request: web.Request, call: Call[RsvpIn, None]):
    """Say going, interested or not going; `going` beyond capacity is 409."""
    return await call.services.events.rsvp(call.user_id, request.match_info["event_id"], call.body.status)


@router.route("DELETE", "/events/{event_id}/rsvp", name="events.rsvp.delete", status=204, errors=(401, 404))
async def withdraw_rsvp(request: web.Request, call: Call):
    """Withdraw the caller's RSVP (frees a seat)."""
    await call.services.events.withdraw_rsvp(call.user_id, request.match_info["event_id"])
    return None


@router.route("GET", "/events/{event_id}/attendees", name="events.attendees", query=ListQuery,
              response=AttendeeList, errors=(400, 401, 404))
async def attendees(request: web.Request, call: Call[None, ListQuery]):
    """Who answered, with their status, newest first."""
    return await call.services.events.attendees(request.match_info["event_id"], limit=call.query.limit,
                                                cursor=call.query.cursor, viewer_id=call.user_id)
