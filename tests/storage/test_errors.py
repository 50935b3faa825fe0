"""Storage's error boundary: a store that does not answer leaves storage as StoreUnavailable
(raised from the driver's error); every other error leaves it unchanged."""
from __future__ import annotations

import pytest
import redis.exceptions

from kernel.errors import StoreUnavailable
from storage.embedded.processes import free_port
from storage.errors import translates_unavailable
from storage.redis.client import Keys, RedisUnavailable, create_redis
from storage.redis.rate_limit import RateLimitStore


async def test_a_redis_adapter_raises_redis_unavailable_from_the_drivers_error(settings):
    # Nothing listens on a port just freed: the driver cannot connect.
    client = create_redis(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=1))
    try:
        with pytest.raises(RedisUnavailable) as raised:
            await RateLimitStore(client, Keys(settings.namespace)).peek("test", "someone")
    finally:
        await client.aclose()
    error = raised.value
    assert error.store == "redis" and error.status == 503
    assert error.detail == "The redis store is unavailable; try again shortly."
    assert isinstance(error.driver_error, redis.exceptions.ConnectionError)
    assert str(error.driver_error) in str(error)  # logs say why; clients get the detail


class Adapter:
    async def fails(self, exc: BaseException) -> None:
        raise exc

    async def _private(self, exc: BaseException) -> None:
        raise exc


async def test_only_the_listed_errors_of_public_methods_are_translated():
    adapter = translates_unavailable((ConnectionError,), lambda: StoreUnavailable("teststore"))(Adapter)()
    with pytest.raises(StoreUnavailable) as raised:
        await adapter.fails(ConnectionResetError("gone"))
    assert raised.value.store == "teststore" and isinstance(raised.value.driver_error, ConnectionResetError)
    with pytest.raises(ValueError):
        await adapter.fails(ValueError("a bug, not an outage"))
    with pytest.raises(ConnectionError):  # a helper of the adapter's own: its caller decides
        await adapter._private(ConnectionError("raw"))


def test_a_re_raised_store_error_still_names_the_drivers_error():
    try:
        try:
            raise StoreUnavailable("redis") from TimeoutError("no answer in 2 s")
        except StoreUnavailable as exc:
            raise StoreUnavailable("redis", "Login is unavailable for a moment.") from exc
    except StoreUnavailable as outer:
        assert isinstance(outer.driver_error, TimeoutError)
        assert outer.detail == "Login is unavailable for a moment."
        assert str(outer) == "Login is unavailable for a moment. (no answer in 2 s)"
