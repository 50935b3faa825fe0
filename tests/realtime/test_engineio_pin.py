"""realtime/transport.py copies engineio's ``_handle_connect`` and replaces or relies on a
few more engineio and python-socketio internals (what they do is read there, not
through a public API). An upgrade that changes any of them fails here: re-read the
changed function, adapt transport.py, then record its new hash (and keep the pins in
pyproject.toml on the line verified)."""
from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

from engineio import async_server, async_socket, base_socket
from engineio.async_drivers import aiohttp as aiohttp_driver
from socketio import async_server as sio_async_server

# sha256 (first 16 hex digits) of each function's source, and what transport.py does with it.
ADAPTED = {
    # DirectEngineServer._handle_connect is a copy (with the handshake values, the
    # per-address cap and the connect deadline added).
    "engineio.async_server.AsyncServer._handle_connect": "5bd7edc1d1ae115a",
    # DirectEngineServer.handle_request answers some requests before it (400s, the
    # second websocket of an upgraded session); attach adds a route for other methods.
    "engineio.async_server.AsyncServer.handle_request": "1a8c878e35166cfe",
    "engineio.async_server.AsyncServer.attach": "7874d4dc1c319bc6",
    "engineio.async_drivers.aiohttp.create_route": "0bb365240a062488",
    # DirectEngineServer.shutdown replaces shutdown (idempotent) and stops the service
    # task by cancelling it, which _service_task takes as its end.
    "engineio.async_server.AsyncServer.shutdown": "3f734c62c291d56a",
    "engineio.async_server.AsyncServer._service_task": "b6358bda51d0b34b",
    # DirectSocket: the direct receive loop calls receive; close wraps close (bounded
    # wait, NOOP for a pending poll); handle_post_request is replaced (strict decoding);
    # send, poll, schedule_ping, handle_get_request and the initial last_ping are
    # relied upon as they are.
    "engineio.async_socket.AsyncSocket.receive": "a91ae36ec2fb5340",
    "engineio.async_socket.AsyncSocket.close": "faa2e93902543244",
    "engineio.async_socket.AsyncSocket.send": "0437276ccba7ab09",
    "engineio.async_socket.AsyncSocket.poll": "826f58a9f3606db2",
    "engineio.async_socket.AsyncSocket.schedule_ping": "fe316639159cd70d",
    "engineio.async_socket.AsyncSocket.handle_get_request": "05eaae9f0a60d9be",
    "engineio.async_socket.AsyncSocket.handle_post_request": "82dca119a261a959",
    "engineio.base_socket.BaseSocket.__init__": "8532b631a4dc815f",
    # Upgrades from polling run engineio's handler on LeanWebSocket, whose __call__ is
    # a copy (no compression) and whose wait() checks each frame (malformed -> OSError).
    "engineio.async_socket.AsyncSocket._websocket_handler": "27f120df4d717a24",
    "engineio.async_drivers.aiohttp.WebSocket.__call__": "71f9a94476d737c3",
    "engineio.async_drivers.aiohttp.WebSocket.wait": "992c370917677d39",
    # DirectSocketServer._handle_eio_message replaces python-socketio's dispatch (strict
    # decoding) and _handle_connect answers unknown namespaces before it.
    "socketio.async_server.AsyncServer._handle_eio_message": "bef50fc0e1635921",
    "socketio.async_server.AsyncServer._handle_connect": "c97c480cf777de36",
}

FUNCTIONS = {
    "engineio.async_server.AsyncServer._handle_connect": async_server.AsyncServer._handle_connect,
    "engineio.async_server.AsyncServer.handle_request": async_server.AsyncServer.handle_request,
    "engineio.async_server.AsyncServer.attach": async_server.AsyncServer.attach,
    "engineio.async_drivers.aiohttp.create_route": aiohttp_driver.create_route,
    "engineio.async_server.AsyncServer.shutdown": async_server.AsyncServer.shutdown,
    "engineio.async_server.AsyncServer._service_task": async_server.AsyncServer._service_task,
    "engineio.async_socket.AsyncSocket.receive": async_socket.AsyncSocket.receive,
    "engineio.async_socket.AsyncSocket.close": async_socket.AsyncSocket.close,
    "engineio.async_socket.AsyncSocket.send": async_socket.AsyncSocket.send,
    "engineio.async_socket.AsyncSocket.poll": async_socket.AsyncSocket.poll,
    "engineio.async_socket.AsyncSocket.schedule_ping": async_socket.AsyncSocket.schedule_ping,
    "engineio.async_socket.AsyncSocket.handle_get_request": async_socket.AsyncSocket.handle_get_request,
    "engineio.async_socket.AsyncSocket.handle_post_request": async_socket.AsyncSocket.handle_post_request,
    "engineio.base_socket.BaseSocket.__init__": base_socket.BaseSocket.__init__,
    "engineio.async_socket.AsyncSocket._websocket_handler": async_socket.AsyncSocket._websocket_handler,
    "engineio.async_drivers.aiohttp.WebSocket.__call__": aiohttp_driver.WebSocket.__call__,
    "engineio.async_drivers.aiohttp.WebSocket.wait": aiohttp_driver.WebSocket.wait,
    "socketio.async_server.AsyncServer._handle_eio_message": sio_async_server.AsyncServer._handle_eio_message,
    "socketio.async_server.AsyncServer._handle_connect": sio_async_server.AsyncServer._handle_connect,
}


def source_hash(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def test_the_engineio_and_socketio_internals_transport_adapts_are_unchanged():
    assert FUNCTIONS.keys() == ADAPTED.keys()
    changed = {name: source_hash(f) for name, f in FUNCTIONS.items() if source_hash(f) != ADAPTED[name]}
    assert not changed, (f"python-engineio {version('python-engineio')} / python-socketio {version('python-socketio')} changed "
                         f"what realtime/transport.py adapts: {changed}")
