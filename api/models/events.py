"""Request bodies and queries of the events endpoints (responses: ``server.read_models.events``)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from api.models.common import ListQuery
from server.read_models.events import RsvpStatus


def _utc(moment: datetime) -> datetime:
    # A time without an offset is read as UTC (the contract speaks UTC throughout).
    try:
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except OverflowError:  # e.g. year 1 at +20:00 is before the first representable moment
        raise ValueError("out of the supported range of dates") from None


def _text_only(value: Any) -> Any:
    # The contract's timestamps are ISO 8601 strings; a bare number is not one.
    if not isinstance(value, (str, datetime)):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_text_only), AfterValidator(_utc)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=5000)]
Location = Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)]
Capacity = Annotated[int, Field(ge=1, le=1_000_000)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title
    description: Description | None = None
    starts_at: Timestamp
    ends_at: Timestamp | None = None
    location: Location | None = None
    capacity: Capacity | None = Field(None, description="null = unlimited")


class EventPatchIn(BaseModel):
    """Any of the create fields; null clears description, ends_at, location, capacity."""

    model_config = ConfigDict(extra="forbid")
    title: Title = None  # may be left out, not cleared: null is 400
    description: Description | None = None
    starts_at: Timestamp = None
    ends_at: Timestamp | None = None
    location: Location | None = None
    capacity: Capacity | None = None


class EventsQuery(ListQuery):
    model_config = ConfigDict(populate_by_name=True)
    from_: Timestamp | None = Field(None, alias="from", description="default: now")
    to: Timestamp | None = None


class RsvpIn(BaseModel):
    status: RsvpStatus
