"""Socket.IO wire packets, built once per event and written as-is to every recipient socket."""
from __future__ import annotations

from typing import Any

import orjson
from engineio import packet as eio_packet

EVENT = "2"  # Socket.IO packet type EVENT, default namespace


class OrjsonCodec:
    """The ``json`` module interface python-socketio expects, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)


def event_packet(event: str, data_json: bytes, offset: str | None = None) -> eio_packet.Packet:
    """``event`` with ``data_json`` (a JSON object) as its argument; ``offset`` is
    spliced in as the object's first field without decoding the rest."""
    data = data_json.decode()
    if offset is not None:
        head = '{"offset":"' + offset + '"'
        data = head + "}" if data.strip() == "{}" else head + "," + data.lstrip()[1:]
    return eio_packet.Packet(eio_packet.MESSAGE, EVENT + '[' + orjson.dumps(event).decode() + ',' + data + ']')


def event_packet_from(event: str, data: dict[str, Any]) -> eio_packet.Packet:
    return event_packet(event, orjson.dumps(data))
