"""Pure parts of the bench harness: the fan-out comparison and the accounts it uses."""
from __future__ import annotations

import json

from loadtest.bench import fanout_accounts, fanout_ratios


def steps(*rows):
    return [{"offered_per_second": offered, "per_second": got, "p99_ms": p99} for offered, got, p99 in rows]


def test_fanout_ratios_compare_at_10k_and_the_sustained_maxima():
    bare = {"steps": steps((1000, 999, 2.0), (10000, 9990, 5.0), (20000, 12000, 900.0)),
            "max_sustained_per_second": 9990}
    pulse = {"steps": steps((1000, 999, 3.0), (10000, 9995, 12.0), (20000, 19990, 30.0)),
             "max_sustained_per_second": 19990}
    ratios = fanout_ratios(bare, pulse)
    assert ratios["socketio_broadcast_p99_at_10k_ms"] == 5.0 and ratios["pulse_chat_fanout_p99_at_10k_ms"] == 12.0
    assert ratios["chat_fanout_p99_ratio_at_10k"] == 2.4
    assert ratios["chat_fanout_max_sustained_ratio"] == round(19990 / 9990, 3)
    # Pulse gave up before 10k: no p99 ratio (no verdict), and a sustained ratio of what it held.
    short = {"steps": steps((1000, 999, 3.0)), "max_sustained_per_second": 999}
    ratios = fanout_ratios(bare, short)
    assert "chat_fanout_p99_ratio_at_10k" not in ratios
    assert ratios["chat_fanout_max_sustained_ratio"] == round(999 / 9990, 3)


def test_fanout_accounts_skip_the_fanout_host(tmp_path):
    users = [{"id": f"id{i}", "username": f"u{i}"} for i in range(5)]
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"users": users, "tokens": {"4": "t4", "0": "t0", "2": "t2", "1": "t1"}}))
    assert fanout_accounts(seed, 3) == [{"token": "t0", "user_id": "id0"}, {"token": "t1", "user_id": "id1"},
                                        {"token": "t2", "user_id": "id2"}]
    try:
        fanout_accounts(seed, 4)  # the host (last user) is never one of them
    except RuntimeError as exc:
        assert "needs 4" in str(exc)
    else:
        raise AssertionError("four accounts without the host do not exist")
