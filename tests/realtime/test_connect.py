"""Connecting: auth, rooms, metrics."""
from __future__ import annotations

import pytest
import socketio

from tests.helpers.realtime import SocketClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("auth", [None, {}, {"token": ""}, {"token": "not-a-token"}, {"token": 42}, "garbage"])
async def test_bad_or_missing_token_is_refused_with_unauthorized(instance_a, auth):
    client = SocketClient()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(instance_a.url, None, raw_auth=auth)
        assert client.connect_errors == [{"message": "unauthorized"}]
        assert not client.sio.connected
    finally:
        await client.close()


async def test_logged_out_token_is_refused(api, instance_a):
    account = await api.register("rtout")
    status, _, _ = await api.request("POST", "/auth/logout", token=account.token)
    assert status == 204
    client = SocketClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(instance_a.url, account.token)
    assert client.connect_errors == [{"message": "unauthorized"}]
    await client.close()


async def test_valid_token_connects_and_is_counted_in_metrics(api, instance_a, clients):
    account = await api.register("rtok")
    before = _gauge(await _metrics(api))
    client = await clients(instance_a.url, account.token)
    assert client.sio.connected
    assert _gauge(await _metrics(api)) == before + 1
    await client.sio.disconnect()
    # The server notices the disconnect asynchronously.
    from tests.helpers.waiting import eventually

    async def back_to_before():
        return _gauge(await _metrics(api)) == before

    await eventually(back_to_before, timeout=10, interval=0.1)


async def _metrics(api) -> str:
    status, body, _ = await api.request("GET", "/metrics")
    assert status == 200
    return body.decode()


def _gauge(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("pulse_socketio_connections "):
            return float(line.split()[1])
    raise AssertionError("pulse_socketio_connections missing from /metrics")
