"""The baseline: stock python-socketio + AsyncRedisManager on a bare aiohttp app.

Clients authenticate with ``{"token": "<user>", "group": <g>}`` and join the room
``g:<g>``; the bench publishes with a write-only AsyncRedisManager to those rooms. Clients
may also send the way Pulse's chat does: ``message:send`` with ``{conversation_id: "g:<g>",
body, client_id}`` is broadcast to that room as ``message:new`` ``{message: {...}}`` (the
sender's socket included) and acknowledged with ``{ok: true}`` — Pulse's path without the
storage (the saturation bench's baseline, loadtest/saturation/chat.py).

    python -m loadtest.realtime_perf.bare_sio --port 8090 --redis redis://127.0.0.1:6379/13
"""
from __future__ import annotations

import argparse

import socketio
from aiohttp import web

from realtime.packets import OrjsonCodec

CHANNEL = "perf-bare-sio"


def make_app(redis_url: str, channel: str = CHANNEL) -> web.Application:
    # Redis pub/sub channels are server-wide (not per db): runs sharing a server need their own.
    mgr = socketio.AsyncRedisManager(redis_url, channel=channel)
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

    @sio.on("message:send")
    async def message_send(sid, data):
        message = {"conversation_id": data["conversation_id"], "body": data["body"],
                   "client_id": data.get("client_id")}
        await sio.emit("message:new", {"message": message}, room=data["conversation_id"])
        return {"ok": True, "message": message}

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--channel", default=CHANNEL)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.redis, args.channel), host="127.0.0.1", port=args.port, print=None, backlog=4096)


if __name__ == "__main__":
    main()
