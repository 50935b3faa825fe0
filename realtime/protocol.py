"""Strict decoding of what clients send: Engine.IO v4 packets and Socket.IO v5 packets.

engineio and python-socketio decode leniently (an Engine.IO payload that happens to be
JSON becomes a dict, a Socket.IO packet may announce up to 9,999,999,999 binary
attachments, a parse error is an exception with a traceback). Pulse decodes each frame
here first: anything outside the text protocol its clients speak is ``MalformedFrame``,
and the connection is closed (the reference server closes it too: "parse error").
Binary frames and binary Socket.IO packets (types 5 and 6) are not part of the contract.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from engineio import packet as eio_packet

CONNECT, DISCONNECT, EVENT, ACK = 0, 1, 2, 3
# Longest namespace and ack id accepted (the reference parser has no limit; these are
# far beyond any real client's).
MAX_NAMESPACE_CHARS = 256
MAX_ACK_ID_DIGITS = 15
# Packets in one long-polling POST (engineio's own limit).
MAX_PAYLOAD_PACKETS = 16
RECORD_SEPARATOR = "\x1e"


class MalformedFrame(Exception):
    """A frame outside the protocol; ``reason`` labels the metric and the debug log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClientPacket(NamedTuple):
    """A Socket.IO packet from a client: type, namespace ("/" by default), ack id, data."""

    kind: int
    namespace: str
    ack_id: int | None
    data: Any


# Engine.IO packet types a v4 client may send: CLOSE, PING (only the upgrade probe),
# PONG, MESSAGE, UPGRADE, NOOP. OPEN is the server's.
_CLIENT_EIO_TYPES = {"1": eio_packet.CLOSE, "2": eio_packet.PING, "3": eio_packet.PONG,
                     "4": eio_packet.MESSAGE, "5": eio_packet.UPGRADE, "6": eio_packet.NOOP}


def decode_engineio(frame: Any) -> eio_packet.Packet:
    """One Engine.IO packet as a client sends it in a websocket text frame (or as one
    record of a polling payload). The MESSAGE payload stays a string for Socket.IO."""
    if not isinstance(frame, str):
        raise MalformedFrame("binary")
    if not frame:
        raise MalformedFrame("engineio")
    kind = _CLIENT_EIO_TYPES.get(frame[0])
    if kind is None:
        raise MalformedFrame("binary" if frame[0] == "b" else "engineio")
    data = frame[1:]
    if kind == eio_packet.MESSAGE:
        return eio_packet.Packet(kind, data)
    if data and not (data == "probe" and kind in (eio_packet.PING, eio_packet.PONG)):
        raise MalformedFrame("engineio")
    return eio_packet.Packet(kind, data or None)


def decode_payload(body: bytes) -> list[eio_packet.Packet]:
    """The packets of a long-polling POST body (records separated by U+001E)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("engineio") from None
    records = text.split(RECORD_SEPARATOR)
    if len(records) > MAX_PAYLOAD_PACKETS:
        raise MalformedFrame("engineio")
    return [decode_engineio(record) for record in records]


def parse_socketio(message: Any) -> ClientPacket:
    """A Socket.IO v5 packet from a client: ``<type>[/<namespace>,][<ack id>][<JSON>]``,
    checked against what each type may carry."""
    if not isinstance(message, str):
        raise MalformedFrame("binary")
    if not message:
        raise MalformedFrame("socketio")
    head = message[0]
    if head in "56":
        raise MalformedFrame("binary")
    if head not in "0123":
        raise MalformedFrame("socketio")
    kind, rest, namespace = int(head), message[1:], "/"
    if rest.startswith("/"):
        comma = rest.find(",")
        namespace, rest = (rest, "") if comma == -1 else (rest[:comma], rest[comma + 1:])
        namespace = namespace.partition("?")[0]  # a query in the namespace is not part of its name
        if len(namespace) > MAX_NAMESPACE_CHARS:
            raise MalformedFrame("socketio")
    digits = 0
    while digits < len(rest) and rest[digits] in "0123456789":
        digits += 1
    if digits > MAX_ACK_ID_DIGITS:
        raise MalformedFrame("socketio")
    ack_id = int(rest[:digits]) if digits else None
    rest = rest[digits:]
    data: Any = None
    if rest:
        try:
            data = orjson.loads(rest)
        except orjson.JSONDecodeError:
            raise MalformedFrame("socketio") from None
    if kind == CONNECT:
        # Any JSON as auth: a payload that is not an object is refused as a bad token
        # ("unauthorized", the contract), not as a malformed packet.
        ok = ack_id is None
    elif kind == DISCONNECT:
        ok = ack_id is None and not rest
    elif kind == EVENT:
        ok = isinstance(data, list) and bool(data) and isinstance(data[0], str)
    else:  # ACK
        ok = ack_id is not None and isinstance(data, list)
    if not ok:
        raise MalformedFrame("socketio")
    return ClientPacket(kind, namespace, ack_id, data)
