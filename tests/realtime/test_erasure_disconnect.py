"""An erasure request closes the user's sockets on every instance, and they cannot come back."""
from __future__ import annotations

import pytest
import socketio

from tests.helpers.realtime import SocketClient
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_erasure_disconnects_every_socket_of_the_user_on_every_instance(api, instance_a, instance_b, clients):
    leaving, staying = await api.register("rter"), await api.register("rtst")
    here = await clients(instance_a.url, leaving.token)
    there = await clients(instance_b.url, leaving.token)
    bystander = await clients(instance_a.url, staying.token)
    assert here.sio.connected and there.sio.connected

    status, _, _ = await api.request("DELETE", "/users/me", token=leaving.token, json={"password": leaving.password})
    assert status == 202

    async def both_closed() -> bool:
        return here.disconnects == 1 and there.disconnects == 1

    await eventually(both_closed, timeout=10, interval=0.1)
    assert bystander.sio.connected and bystander.disconnects == 0
    assert not any(event == "pulse:disconnect" for event, _ in list(here.received._queue))
    again = SocketClient()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(instance_a.url, leaving.token)
        assert again.connect_errors == [{"message": "unauthorized"}]
    finally:
        await again.close()
