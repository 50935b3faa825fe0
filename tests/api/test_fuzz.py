"""Schemathesis against the app's own /openapi.json: no 500s, and every response matches
the status codes, content types and schemas the document declares. Path parameters are
real ids (a user, post, comment, event, conversation, notification) so the fuzzing gets
past 404 into the handlers; ``PULSE_FUZZ_EXAMPLES`` raises the examples per operation."""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

ST = Path(sys.executable).with_name("st")
CHECKS = os.environ.get("PULSE_FUZZ_CHECKS") or (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "response_headers_conformance")


async def fixtures(api) -> tuple[str, dict[str, dict[str, str]]]:
    """A fuzzing account's token and, per operation id, the real ids of its path parameters."""
    me, other = await api.register("fz"), await api.register("fzo")

    async def create(path, payload, account=me):
        status, body, _ = await api.request("POST", path, token=account.token, json=payload)
        assert status in (200, 201), body
        return body["id"]

    post = await create("/posts", {"body": "fuzz me"})
    doomed = await create("/posts", {"body": "delete me"})
    comment = await create(f"/posts/{post}/comments", {"body": "a comment"})
    starts = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    event = await create("/events", {"title": "fuzz", "starts_at": starts})
    cancelled = await create("/events", {"title": "cancel me", "starts_at": starts})
    conversation = await create("/conversations", {"member_ids": [other.id]})
    await create(f"/conversations/{conversation}/messages", {"body": "hi", "client_id": uuid.uuid4().hex})
    _, notes, _ = await api.request("GET", "/notifications", token=me.token)
    notification = notes["items"][0]["id"]
    by_operation = {
        "users.get": {"user": other.id},
        **{op: {"user_id": other.id} for op in ("users.follow", "users.unfollow", "users.followers",
                                                 "users.following")},
        "users.posts": {"id": other.id},
        **{op: {"id": post} for op in ("posts.get", "comments.create", "comments.list", "posts.like",
                                        "posts.unlike")},
        "posts.delete": {"id": doomed},
        "comments.delete": {"id": comment},
        **{op: {"event_id": event} for op in ("events.get", "events.update", "events.rsvp", "events.rsvp.delete",
                                               "events.attendees")},
        "events.delete": {"event_id": cancelled},
        **{op: {"id": conversation} for op in ("conversations.get", "conversations.messages",
                                                "conversations.send", "conversations.read")},
        "notifications.read": {"id": notification},
    }
    return me.token, by_operation


def config_file(path: Path, by_operation: dict[str, dict[str, str]]) -> Path:
    lines = []
    for operation, params in by_operation.items():
        lines += ["[[operations]]", f'include-operation-id = "{operation}"',
                  "parameters = { " + ", ".join(f'"path.{k}" = "{v}"' for k, v in params.items()) + " }", ""]
    path.write_text("\n".join(lines))
    return path


async def run_schemathesis(base_url: str, token: str, config: Path, examples: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ST), "--config-file", str(config), "run", f"{base_url}/openapi.json", "--url", base_url,
        "-H", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        # Logging out (of one or all sessions) would revoke the token every later request uses.
        "--exclude-operation-id", "auth.logout", "--exclude-operation-id", "auth.logout_all",
        "--phases", "examples,coverage,fuzzing", "--max-examples", examples,
        "--workers", "1", "--seed", "1", "--no-color", "--generation-database", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=config.parent,  # its cache too
    )
    out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.skipif(not ST.exists(), reason="schemathesis is not installed")
async def test_openapi_fuzz_finds_no_server_errors_or_schema_mismatches(start_app, tmp_path):
    async with start_app(rate_limits=False) as api:
        token, by_operation = await fixtures(api)
        code, out = await run_schemathesis(api.base_url, token, config_file(tmp_path / "schemathesis.toml", by_operation),
                                           os.environ.get("PULSE_FUZZ_EXAMPLES", "10"))
        status, _, _ = await api.request("GET", "/healthz")
        assert status == 200
    assert code == 0, out[-20000:]
    assert "Missing test data" not in out, out[-20000:]
