"""Domain errors. Lower layers raise these; one middleware (api/middleware.py) turns
them into application/problem+json, and the Socket.IO handlers into ``{ok: false}`` acks.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    status: int = 500
    title: str = "Internal Server Error"
    type_slug: str = "internal"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title

    @property
    def type(self) -> str:
        return f"https://pulse.dev/problems/{self.type_slug}"


class ValidationFailed(DomainError):
    status, title, type_slug = 400, "Bad Request", "validation"

    def __init__(self, detail: str = "The request is not valid.", errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class Unauthorized(DomainError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"


class Forbidden(DomainError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class NotFound(DomainError):
    status, title, type_slug = 404, "Not Found", "not-found"


class Conflict(DomainError):
    status, title, type_slug = 409, "Conflict", "conflict"


class PayloadTooLarge(DomainError):
    status, title, type_slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(DomainError):
    status, title, type_slug = 415, "Unsupported Media Type", "unsupported-media-type"


class RateLimited(DomainError):
    status, title, type_slug = 429, "Too Many Requests", "rate-limited"

    def __init__(self, retry_after: int, detail: str = "Too many requests; try again later.") -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class Overloaded(DomainError):
    """Too much work of one kind is queued already; refused at once, to be retried later."""

    status, title, type_slug = 503, "Service Unavailable", "overloaded"

    def __init__(self, retry_after: int, detail: str = "The server is busy; try again shortly.") -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class StoreUnavailable(DomainError):
    """A backing store did not answer in time; the request may be retried later. Storage
    raises it from the driver's error (storage/errors.py)."""

    status, title, type_slug = 503, "Service Unavailable", "store-unavailable"

    def __init__(self, store: str, detail: str | None = None) -> None:
        super().__init__(detail or f"The {store} store is unavailable; try again shortly.")
        self.store = store

    @property
    def driver_error(self) -> BaseException | None:
        """The driver's exception this was raised from (through re-raises), for logs."""
        cause = self.__cause__
        while isinstance(cause, StoreUnavailable):
            cause = cause.__cause__
        return cause

    def __str__(self) -> str:
        # Logs say why the store failed, not only which; clients get ``detail`` alone.
        driver_error = self.driver_error
        return self.detail if driver_error is None else f"{self.detail} ({driver_error})"
