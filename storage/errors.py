"""Storage's error boundary: a driver error that says a store did not answer leaves
storage as kernel's ``StoreUnavailable`` naming the store (raised from the driver's
error), so the layers above map domain errors only and never import a driver.

Each store lists what "did not answer" is for its driver (``PG_UNAVAILABLE`` in
storage/postgres/pool.py, ``MONGO_UNAVAILABLE`` in storage/mongo/errors.py,
``REDIS_UNAVAILABLE`` in storage/redis/client.py); its adapters translate with
``translates_unavailable``, the PostgreSQL pool where it hands out connections.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

from kernel.errors import StoreUnavailable

C = TypeVar("C", bound=type)


def translates_unavailable(driver_errors: tuple[type[BaseException], ...],
                           unavailable: Callable[[], StoreUnavailable]) -> Callable[[C], C]:
    """Class decorator for a store adapter: each of its public coroutine methods raises
    ``unavailable()`` from the driver's error when one of ``driver_errors`` escapes it."""

    def translated(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except driver_errors as exc:
                raise unavailable() from exc
        return call

    def decorate(cls: C) -> C:
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(value):
                setattr(cls, name, translated(value))
        return cls

    return decorate
