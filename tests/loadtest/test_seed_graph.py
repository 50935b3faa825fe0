"""Shapes of the synthetic seed data: skewed, valid, reproducible."""
from __future__ import annotations

import statistics
import pytest

from loadtest.graph import chat_groups, follow_graph, posts_per_user, sentences


@pytest.fixture(scope="module")
def graph():
    return follow_graph(5000, mean_following=20, seed=7)


def test_no_self_follows(graph):
    assert len(graph) > 0
    assert all(a != b for a, b in graph.pairs())


def test_no_duplicate_pairs(graph):
    pairs = set(graph.pairs())
    assert len(pairs) == len(graph)


def test_indexes_are_in_range(graph):
    assert min(graph.follower) >= 0 and max(graph.follower) < graph.n_users
    assert min(graph.followee) >= 0 and max(graph.followee) < graph.n_users


def test_in_degree_is_skewed(graph):
    in_degree = sorted(graph.in_degree(), reverse=True)
    top_1_percent = sum(in_degree[: graph.n_users // 100])
    # Uniform targets would give the top 1% about 1-2% of edges; a power law far more.
    assert top_1_percent / sum(in_degree) > 0.2
    assert in_degree[0] > 20 * max(statistics.median(in_degree), 1)
    # Most accounts have few followers.
    assert statistics.median(in_degree) < statistics.mean(in_degree)


def test_mean_out_degree_near_request(graph):
    # Duplicates to celebrities are dropped, so a bit under the drawn mean.
    assert 10 < statistics.mean(graph.out_degree()) <= 21


def test_same_seed_same_graph():
    a = follow_graph(500, seed=3)
    b = follow_graph(500, seed=3)
    c = follow_graph(500, seed=4)
    assert list(a.pairs()) == list(b.pairs())
    assert list(a.pairs()) != list(c.pairs())


def test_tiny_graphs():
    assert len(follow_graph(1)) == 0
    two = follow_graph(2, mean_following=5, seed=1)
    assert set(two.pairs()) <= {(0, 1), (1, 0)}


def test_posts_per_user_is_heavy_tailed():
    counts = posts_per_user(10000, mean_posts=5, seed=1)
    assert min(counts) >= 0
    assert 3 < statistics.mean(counts) < 7
    assert max(counts) > 10 * statistics.median(counts)


def test_chat_groups_cover_members_without_singletons():
    groups = chat_groups(10, 4)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert sorted(i for g in groups for i in g) == list(range(10))
    merged = chat_groups(9, 4)
    assert [len(g) for g in merged] == [4, 5]
    with pytest.raises(ValueError):
        chat_groups(10, 1)


def test_sentences_fit_post_limits():
    bodies = sentences(200, seed=1)
    assert len(bodies) == 200
    assert all(1 <= len(b) <= 5000 for b in bodies)


def test_large_accounts_have_the_followers_asked_for_once_each():
    from loadtest.graph import large_accounts

    many = large_accounts(1000, 3, 5000)
    assert many.audience == 4000 and len(many) == 3 * 5000
    pairs = list(many.pairs())
    assert len(set(pairs)) == len(pairs) == 15000
    assert {b for _, b in pairs} == {1000, 1001, 1002}
    assert all(a != b and a not in many.account_indexes() for a, b in pairs)
    assert max(a for a, _ in pairs) == 1000 + 3 + 4000 - 1
    few = large_accounts(1000, 2, 300)
    assert few.audience == 0 and len(set(few.pairs())) == 600
    assert len(set(few.regular_followers)) == 300 and max(few.regular_followers) < 1000
    assert len(large_accounts(1000, 0, 5000)) == 0 and large_accounts(1000, 0, 5000).audience == 0
