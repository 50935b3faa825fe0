"""Read models of the events context: events, RSVPs, attendees."""
from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict

from server.read_models.users import PublicUser, UserRef

RsvpStatus = Literal["going", "interested", "not_going"]


class Event(TypedDict):
    id: str
    host: UserRef
    title: str
    description: str | None
    starts_at: str
    ends_at: str | None
    location: str | None
    capacity: int | None
    going_count: int
    my_rsvp: RsvpStatus | None


class EventList(TypedDict):
    items: list[Event]
    next_cursor: str | None


class RsvpState(TypedDict):
    status: RsvpStatus
    going_count: int


class Attendee(TypedDict):
    user: PublicUser
    status: RsvpStatus


class AttendeeList(TypedDict):
    items: list[Attendee]
    next_cursor: str | None
