"""The baseline: stock python-socketio + AsyncRedisManager on a bare aiohttp app.

Clients authenticate with ``{"token": "<user>", "group": <g>}`` and join the room
``g:<g>``; the bench publishes with a write-only AsyncRedisManager to those rooms.

    python -m loadtest.realtime_perf.bare_sio --port 8090 --redis redis://127.0.0.1:6379/13
"""
from __future__ import annotations

import argparse

import socketio
from aiohttp import web

from realtime.packets import OrjsonCodec

CHANNEL = "perf-bare-sio"


def make_app(redis_url: str) -> web.Application:
    mgr = socketio.AsyncRedisManager(redis_url, channel=CHANNEL)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, json=OrjsonCodec,
                               logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")

    @sio.on("connect")
    async def connect(sid, environ, auth=None):
        auth = auth if isinstance(auth, dict) else {}
        if "token" not in auth:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        await sio.enter_room(sid, f"g:{auth.get('group', 0)}")

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis", required=True)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.redis), host="127.0.0.1", port=args.port, print=None, backlog=4096)


if __name__ == "__main__":
    main()
