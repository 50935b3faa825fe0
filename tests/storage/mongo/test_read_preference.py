"""PULSE_MONGO_READ_PREFERENCE reaches the reads that tolerate staleness (notification
lists, history pages older than the newest) and no other: membership checks, idempotency
look-ups, read positions and the newest page stay on the primary. Checked on the wire:
a command listener on the app's own client records each command's ``$readPreference``
(none is sent for primary on a replica-set connection)."""
from __future__ import annotations

import math
import re
import uuid

import pytest

from kernel.settings import ConfigError, Settings
from storage.mongo.client import stale_read_preference
from tests.helpers.app import own_namespaces
from tests.helpers.waiting import eventually
from tests.mongo_commands import CommandRecorder, replica_set_url

ON_SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")

STALE = {"mode": "secondaryPreferred", "maxStalenessSeconds": 120}


def collection_of(name: str, command: dict) -> str | None:
    return command.get(name) if isinstance(command.get(name), str) else None


@ON_SESSION_LOOP
async def test_only_stale_tolerant_reads_carry_the_read_preference(start_app, make_amqp_vhost, mongo_url):
    overrides = own_namespaces(make_amqp_vhost, "readpref")
    recorder = CommandRecorder.installed(overrides["mongo_db"])
    async with start_app(**overrides, mongo_url=replica_set_url(mongo_url), mongo_read_preference="secondaryPreferred",
                         mongo_max_staleness_seconds=120) as api:
        a, b = await api.register("rpa"), await api.register("rpb")
        status, conv, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id]})
        assert status == 201
        path = f"/conversations/{conv['id']}/messages"
        sent = []
        for i in range(3):
            status, msg, _ = await api.request("POST", path, token=a.token, json={"body": f"m{i}", "client_id": f"c{i}"})
            assert status == 201
            sent.append(msg)

        recorder.recording = True
        status, newest, _ = await api.request("GET", f"{path}?limit=2", token=b.token)
        assert status == 200 and [m["id"] for m in newest["items"]] == [sent[2]["id"], sent[1]["id"]]
        status, older, _ = await api.request("GET", f"{path}?limit=2&before={newest['next_cursor']}", token=b.token)
        assert status == 200 and [m["id"] for m in older["items"]] == [sent[0]["id"]]
        status, _, _ = await api.request("GET", f"/conversations/{conv['id']}", token=b.token)
        assert status == 200
        status, _, _ = await api.request("POST", f"/conversations/{conv['id']}/read", token=b.token,
                                         json={"message_id": sent[2]["id"]})
        assert status == 200
        status, retried, _ = await api.request("POST", path, token=a.token, json={"body": "m0", "client_id": "c0"})
        assert status == 200 and retried["id"] == sent[0]["id"]
        # B holds no socket: A's messages notified B, in the send itself (no domain event:
        # this instance shares the session's outbox with the session's app).

        async def notified():
            status, listed, _ = await api.request("GET", "/notifications", token=b.token)
            return status == 200 and listed["items"]

        items = await eventually(notified)
        status, _, _ = await api.request("GET", "/notifications/unread-count", token=b.token)
        assert status == 200
        status, _, _ = await api.request("POST", f"/notifications/{items[0]['id']}/read", token=b.token)
        assert status == 200
        recorder.recording = False
        status, text, _ = await api.request("GET", "/metrics")
        metrics = text.decode()

    stale = [(name, cmd) for name, cmd in recorder.commands if "$readPreference" in cmd]
    primary = [(name, cmd) for name, cmd in recorder.commands if "$readPreference" not in cmd]
    assert all(cmd["$readPreference"] == STALE for _, cmd in stale), stale
    # Stale-tolerant: the notification list, and the older history page (filtered on createdAt).
    assert all(name == "find" and (collection_of("find", cmd) == "notifications"
                                   or (collection_of("find", cmd) == "messages" and "createdAt" in cmd["filter"]))
               for name, cmd in stale), stale
    assert any(collection_of("find", cmd) == "notifications" for _, cmd in stale)
    assert any(collection_of("find", cmd) == "messages" for _, cmd in stale)
    # Everything else on the primary: the newest page, membership, the idempotency look-up,
    # read positions, the unread count and mark-read.
    messages_finds = [cmd["filter"] for name, cmd in primary if collection_of("find", cmd) == "messages"]
    assert any("createdAt" not in f and "clientId" not in f for f in messages_finds)  # the newest page
    assert any("clientId" in f for f in messages_finds)  # the retried send's look-up
    assert any(collection_of("find", cmd) == "conversations" for _, cmd in primary)
    assert any(collection_of("update", cmd) == "conversations" for _, cmd in primary)
    assert any(collection_of("aggregate", cmd) == "notifications" for _, cmd in primary)
    assert any(collection_of("findAndModify", cmd) == "notifications" for _, cmd in primary)
    # SecantusDB reports replSetGetStatus (a one-member set): its member's lag is exported.
    lag = re.findall(r'^pulse_mongo_replica_lag_seconds\{member="([^"]+)"\} (\S+)$', metrics, re.M)
    assert lag and all(math.isfinite(float(v)) and float(v) >= 0 for _, v in lag), metrics


@ON_SESSION_LOOP
async def test_the_default_reads_everything_from_the_primary(start_app, make_amqp_vhost, mongo_url):
    overrides = own_namespaces(make_amqp_vhost, "readpref")
    recorder = CommandRecorder.installed(overrides["mongo_db"])
    async with start_app(**overrides, mongo_url=replica_set_url(mongo_url)) as api:
        a, b = await api.register("rda"), await api.register("rdb")
        status, conv, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id]})
        path = f"/conversations/{conv['id']}/messages"
        for i in range(3):
            await api.request("POST", path, token=a.token, json={"body": f"m{i}", "client_id": uuid.uuid4().hex})
        recorder.recording = True
        status, newest, _ = await api.request("GET", f"{path}?limit=2", token=b.token)
        status, older, _ = await api.request("GET", f"{path}?limit=2&before={newest['next_cursor']}", token=b.token)
        assert status == 200 and len(older["items"]) == 1
        status, _, _ = await api.request("GET", "/notifications", token=b.token)
        assert status == 200
        recorder.recording = False
    assert recorder.commands and not [cmd for _, cmd in recorder.commands if "$readPreference" in cmd]


@pytest.mark.parametrize("preference, staleness", [
    ("bogus", -1), ("secondary", 30), ("primary", 120), ("Secondary", -1),
])
def test_read_preferences_mongodb_refuses_are_refused_at_start(preference, staleness):
    with pytest.raises(ConfigError):
        stale_read_preference(Settings(mongo_read_preference=preference, mongo_max_staleness_seconds=staleness))


def test_read_preference_settings_build_the_driver_preference():
    assert stale_read_preference(Settings()).document == {"mode": "primary"}
    assert stale_read_preference(Settings(mongo_read_preference="nearest", mongo_max_staleness_seconds=90)).document \
        == {"mode": "nearest", "maxStalenessSeconds": 90}
