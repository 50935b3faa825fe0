"""How locust users share out the seeded accounts, and the chat timestamp payload."""
from __future__ import annotations

import json

from loadtest.realtime_session import chat_body, parse_chat_body
from loadtest.seeddata import SeedData, pool_index


def test_pools_do_not_collide_and_spare_the_host():
    n_users, chat_members = 1000, 200
    chat = {pool_index("chat", n, chat_members, n_users) for n in range(chat_members)}
    rest = {pool_index("rest", n, chat_members, n_users) for n in range(300)}
    notify = {pool_index("notify", n, chat_members, n_users) for n in range(300)}
    assert chat == set(range(chat_members))
    assert not (chat & rest) and not (chat & notify) and not (rest & notify)
    assert n_users - 1 not in chat | rest | notify
    # Cyclic once a pool is exhausted.
    assert pool_index("chat", chat_members, chat_members, n_users) == 0


def test_claims_in_order_and_reads_tokens(tmp_path):
    path = tmp_path / "seed.json"
    users = [{"id": f"u{i}", "username": f"lt{i:06d}"} for i in range(10)]
    path.write_text(json.dumps({
        "password": "pw", "users": users, "chat_members": 4,
        "conversations": [{"id": "c1", "members": [0, 1]}, {"id": "c2", "members": [2, 3]}],
        "tokens": {"4": "tok4"}, "popular": [9, 8]}))
    seed = SeedData.load(path)
    assert [seed.claim("chat") for _ in range(5)] == [0, 1, 2, 3, 0]
    assert seed.claim("rest") == 4 and seed.tokens[4] == "tok4"
    assert seed.conversation_of(3)["id"] == "c2"
    assert seed.conversation_of(7) is None


def test_chat_body_round_trip():
    body = chat_body(42, sent_at=1700000000.123456)
    assert 1 <= len(body) <= 4000
    assert parse_chat_body(body) == (1700000000.123456, 42)
    assert parse_chat_body("hello") is None
    assert parse_chat_body("lt|nope|x|y") is None
    assert parse_chat_body(None) is None
