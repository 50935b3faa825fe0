"""/asyncapi.json: a valid AsyncAPI 3.0 document (checked against the official JSON
Schema) that names every event of the real-time contract, and whose payload schemas
accept what a real server sends and acknowledges."""
from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import jsonschema
import pytest
import socketio

from realtime.asyncapi import build_asyncapi
from realtime.models import MessageSend
from tests.helpers.realtime import SocketClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "data" / "asyncapi-3.0.0-schema.json").read_text())
CLIENT_EVENTS = {"message:send", "message:read", "typing", "presence:query"}
SERVER_EVENTS = {"message:new", "message:read", "typing", "notification:new", "resync"}


def asyncapi_errors(document) -> list[str]:
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


def operation_payload(document, action: str, event: str, *, reply: bool = False) -> dict:
    """The JSON Schema (with the document's components) of ``event``'s payload, or of its
    successful acknowledgement when ``reply``."""
    messages = document["components"]["messages"]
    for op in document["operations"].values():
        if op["action"] != action or op["title"] != event:
            continue
        ref = (op["reply"]["messages"][0] if reply else op["messages"][0])["$ref"]
        message = messages[ref.rsplit("/", 1)[1]]
        return {**message["payload"], "components": document["components"]}
    raise AssertionError(f"no {action} operation for {event}")


def component(document, name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def check(schema: dict, instance) -> None:
    jsonschema.Draft202012Validator(schema).validate(instance)


async def test_the_document_is_valid_asyncapi_3():
    document = build_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert asyncapi_errors(document) == []
    # The check has teeth: a document that breaks the specification is refused.
    broken = copy.deepcopy(document)
    broken["operations"]["connect"]["action"] = "publish"  # AsyncAPI 2 wording
    del broken["info"]["version"]
    assert len(asyncapi_errors(broken)) >= 2


async def test_every_event_of_the_contract_is_an_operation(instance_a):
    document = build_asyncapi()
    sends = {op["title"] for op in document["operations"].values() if op["action"] == "send"}
    receives = {op["title"] for op in document["operations"].values() if op["action"] == "receive"}
    assert sends == CLIENT_EVENTS | {"connect"}
    assert receives == SERVER_EVENTS
    # ... and the client events are exactly those the server handles.
    handled = set(instance_a.realtime.sio.handlers["/"]) - {"connect", "disconnect"}
    assert handled == CLIENT_EVENTS
    for op in document["operations"].values():
        if op["action"] == "send":
            assert op["reply"]["messages"], op["title"]  # every client event is acknowledged


async def test_payload_schemas_are_the_handlers_models():
    schemas = build_asyncapi()["components"]["schemas"]
    expected = MessageSend.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["MessageSend"] == expected
    assert schemas["MessageSend"]["properties"]["body"]["maxLength"] == 4000
    assert schemas["ConnectAuth"]["required"] == ["token"] and "offset" in schemas["ConnectAuth"]["properties"]
    # A payload the handler refuses is refused by the document too.
    document = build_asyncapi()
    with pytest.raises(jsonschema.ValidationError):
        check(operation_payload(document, "send", "message:send"), {"conversation_id": "c", "body": ""})


async def test_what_the_server_sends_matches_the_document(api, instance_a, clients):
    document = build_asyncapi()
    alice, bob = await api.register("aapia"), await api.register("aapib")
    status, conv, _ = await api.request("POST", "/conversations", token=alice.token, json={"member_ids": [bob.id]})
    assert status == 201, conv
    a = await clients(instance_a.url, alice.token)
    b = await clients(instance_a.url, bob.token)

    send = {"conversation_id": conv["id"], "body": "hello", "client_id": uuid.uuid4().hex}
    check(operation_payload(document, "send", "message:send"), send)
    ack = await a.call("message:send", send)
    check(operation_payload(document, "send", "message:send", reply=True), ack)
    new = await b.next_event("message:new")
    check(operation_payload(document, "receive", "message:new"), new)

    typing = {"conversation_id": conv["id"], "typing": True}
    check(operation_payload(document, "send", "typing"), typing)
    check(operation_payload(document, "send", "typing", reply=True), await b.call("typing", typing))
    check(operation_payload(document, "receive", "typing"), await a.next_event("typing"))

    read = {"conversation_id": conv["id"], "message_id": new["message"]["id"]}
    check(operation_payload(document, "send", "message:read", reply=True), await b.call("message:read", read))
    check(operation_payload(document, "receive", "message:read"), await a.next_event("message:read"))

    presence = await a.call("presence:query", {"user_ids": [bob.id]})
    check(operation_payload(document, "send", "presence:query", reply=True), presence)

    status, _, _ = await api.request("PUT", f"/users/{alice.id}/follow", token=bob.token)
    assert status == 200
    check(operation_payload(document, "receive", "notification:new"), await a.next_event("notification:new"))

    failed = await a.call("message:send", {"conversation_id": "nope", "body": "x", "client_id": "y"})
    assert failed["ok"] is False
    check(component(document, "AckFailed"), failed)
    with pytest.raises(jsonschema.ValidationError):  # a failure is not a success
        check(operation_payload(document, "send", "message:send", reply=True), failed)

    resumed = await clients(instance_a.url, alice.token, offset="not-an-offset")
    check(operation_payload(document, "receive", "resync"), await resumed.next_event("resync"))

    check(component(document, "ConnectAuth"), {"token": alice.token, "offset": new["offset"]})
    refused = SocketClient()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(instance_a.url, "not-a-token")
        assert refused.connect_errors == [{"message": "unauthorized"}]
        check(component(document, "ConnectRefused"), refused.connect_errors[0])
    finally:
        await refused.close()
