"""What a context contributes to the privacy framework: erasure steps and export
sections (like the event consumers, each context's service builds its own, and
``create_app`` gathers them in order).

A step must be idempotent and keep counters on other users exact (delete the rows and
adjust the counters in one transaction); a section reads its store page by page
(``keyset_pages``), with no secrets and nothing private to other users.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable
from uuid import UUID

if TYPE_CHECKING:
    import asyncpg

    from storage.postgres.pool import Database

EXPORT_PAGE_SIZE = 500

Page = list[dict[str, Any]]


@dataclass(frozen=True)
class ErasureStep:
    """One idempotent part of a purge: removes what one context holds about the user.
    ``run`` may be called again after a failure or a crash, also after it succeeded once
    without being recorded: it must then do nothing harmful (e.g. decrement counters only
    for rows it actually deletes, in the same transaction).

    ``name`` is recorded with every saga (a saga resumes by it): never rename a step once
    deployed. ``before``: names of steps this one must run before (they remove what it
    reads); the saga refuses an order that breaks them."""

    name: str
    run: Callable[[UUID], Awaitable[None]]
    before: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportSection:
    """One array of the export document, read page by page from its store (never all
    at once): ``pages(user_id)`` yields lists of JSON-ready dicts."""

    name: str
    pages: Callable[[UUID], AsyncIterator[Page]]


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


def pg_keyset_pages(db: "Database", fetch: Callable[["asyncpg.Connection", UUID, Any, int], Awaitable[list[Any]]],
                    render: Callable[[Any], dict[str, Any]],
                    id_column: str = "id") -> Callable[[UUID], AsyncIterator[Page]]:
    """Export pages from a PostgreSQL keyset query ``fetch(conn, uid, after, limit)``
    ordered by (created_at, <id_column>): one pooled connection per page."""
    def pages(uid: UUID) -> AsyncIterator[Page]:
        async def page(after: Any, limit: int) -> list[Any]:
            async with db.read() as conn:
                return await fetch(conn, uid, after, limit)

        return keyset_pages(page, None, lambda r: (r["created_at"], r[id_column]), render)

    return pages
