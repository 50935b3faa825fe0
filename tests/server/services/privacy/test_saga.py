"""The order of the purge saga's steps: what every context contributes, gathered by
create_app, checked by the saga (the saga itself: tests/server/services/test_privacy.py)."""
from __future__ import annotations

import re

import pytest

from server.services.privacy import FINAL_STEP, ErasureStep
from server.services.privacy.saga import check_order
from tests.privacy_helpers import privacy_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def nothing(uid) -> None:
    pass


async def test_the_app_runs_every_contexts_steps_in_an_order_that_keeps_their_before(server):
    steps = privacy_of(server).steps
    # Recorded with every saga, which resumes by them: renaming one strands open sagas.
    assert [s.name for s in steps] == [
        "feed.entries", "posts.likes", "posts.comments", "posts.posts", "social.follows", "feed.fanout_modes",
        "events.rsvps", "events.hosted", "realtime.offset_logs", "realtime.presence_and_logs", "messaging.messages",
        "messaging.membership", "notifications.groups", "notifications.for_and_about", "users.sessions",
        "redis.user_keys",
        "outbox.published",
    ]
    check_order(steps)
    assert dict((s.name, s.before) for s in steps if s.before) == {
        "feed.entries": ("social.follows",),
        "realtime.offset_logs": ("messaging.membership", "notifications.groups", "notifications.for_and_about"),
    }


async def test_the_app_exports_every_contexts_sections_in_order(server):
    assert [s.name for s in privacy_of(server).exporter.sections] == [
        "posts", "comments", "likes", "following", "followers", "events_hosted", "rsvps", "conversations",
        "messages", "notifications",
    ]


@pytest.mark.parametrize("names, befores, refused", [
    (["a", "b"], {"a": ("b",)}, None),
    (["a", "b"], {"a": ("elsewhere",)}, None),  # a step of a context not deployed
    (["a", "b"], {"b": ("a",)}, "'b' must run before ['a']"),
    (["a", "a"], {}, "unique"),
    (["a", FINAL_STEP], {}, "unique and not"),
])
async def test_check_order_refuses_duplicates_the_final_step_and_a_broken_before(names, befores, refused):
    steps = [ErasureStep(name, nothing, before=befores.get(name, ())) for name in names]
    if refused is None:
        check_order(steps)
        return
    with pytest.raises(ValueError, match=re.escape(refused)):
        check_order(steps)
