"""Synthetic social data with realistic skew: who follows whom, who posts how much.

Pure functions over a seeded ``random.Random`` (standard library only, so the unit
tests run without the ``load`` extra); a seed run is reproducible.
"""
from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class FollowGraph:
    """Edges as two parallel lists of user indexes: ``follower[i]`` follows ``followee[i]``."""

    n_users: int
    follower: list[int]
    followee: list[int]

    def __len__(self) -> int:
        return len(self.follower)

    def pairs(self):
        return zip(self.follower, self.followee)

    def in_degree(self) -> list[int]:
        return _degrees(self.followee, self.n_users)

    def out_degree(self) -> list[int]:
        return _degrees(self.follower, self.n_users)


def _degrees(ends: list[int], n_users: int) -> list[int]:
    counts = Counter(ends)
    return [counts.get(i, 0) for i in range(n_users)]


def popularity_cum_weights(n_users: int, exponent: float, rng: random.Random) -> list[float]:
    """Cumulative Zipf weights (rank ** -exponent) over users in a random order.

    Random order so that "celebrities" are not simply the first users created.
    """
    weights = [(rank + 1) ** -exponent for rank in range(n_users)]
    rng.shuffle(weights)
    return list(itertools.accumulate(weights))


def follow_graph(n_users: int, *, mean_following: float = 20.0, exponent: float = 1.0,
                 seed: int = 1) -> FollowGraph:
    """A follow graph whose in-degree follows a power law (few accounts followed by many).

    Out-degrees (how many each user follows) are log-normal around ``mean_following``;
    each follow picks its target by Zipf popularity. Self-follows and repeated pairs are
    dropped, so a user may end up following a few less than drawn.
    """
    if n_users < 2:
        return FollowGraph(n_users, [], [])
    rng = random.Random(seed)
    sigma = 1.0
    mu = math.log(max(mean_following, 1e-9)) - sigma**2 / 2
    cum = popularity_cum_weights(n_users, exponent, rng)
    total = cum[-1]
    follower: list[int] = []
    followee: list[int] = []
    for user in range(n_users):
        wanted = min(round(rng.lognormvariate(mu, sigma)), n_users - 1)
        chosen: set[int] = set()
        for _ in range(wanted):
            target = bisect.bisect_right(cum, rng.random() * total)
            target = min(target, n_users - 1)
            if target != user:
                chosen.add(target)
        for target in sorted(chosen):
            follower.append(user)
            followee.append(target)
    return FollowGraph(n_users, follower, followee)


@dataclass(frozen=True)
class LargeAccounts:
    """Accounts followed by very many (hybrid fan-out), added beside a graph of ``n_users``:
    ``accounts`` new users (indexes ``n_users`` on), each followed by ``followers`` users —
    the regular users in ``regular_followers``, then ``audience`` extra users (indexes after
    the accounts) who follow nothing else."""

    n_users: int
    accounts: int
    followers: int
    regular_followers: list[int]

    @property
    def audience(self) -> int:
        return max(0, self.followers - len(self.regular_followers)) if self.accounts else 0

    def account_indexes(self) -> range:
        return range(self.n_users, self.n_users + self.accounts)

    def audience_indexes(self) -> range:
        start = self.n_users + self.accounts
        return range(start, start + self.audience)

    def pairs(self):
        """(follower, followee) for every follow of a large account."""
        for account in self.account_indexes():
            for follower in self.regular_followers:
                yield follower, account
            for follower in self.audience_indexes():
                yield follower, account

    def __len__(self) -> int:
        return self.accounts * (len(self.regular_followers) + self.audience)


def large_accounts(n_users: int, accounts: int, followers: int, *, seed: int = 5) -> LargeAccounts:
    """Every regular user follows the large accounts (a random sample of them when fewer
    followers are wanted); the rest of the followers are an audience of their own."""
    regular = list(range(n_users))
    if followers < n_users:
        regular = sorted(random.Random(seed).sample(regular, followers))
    return LargeAccounts(n_users, accounts, followers, regular if accounts else [])


def posts_per_user(n_users: int, *, mean_posts: float = 5.0, seed: int = 2,
                   cap: int = 500) -> list[int]:
    """How many posts each user has written: heavy-tailed (most write little, a few a lot)."""
    if mean_posts <= 0:
        return [0] * n_users
    rng = random.Random(seed)
    # Lomax (Pareto II) with shape a has mean scale / (a - 1).
    shape = 2.5
    scale = mean_posts * (shape - 1)
    return [min(round(scale * (rng.paretovariate(shape) - 1)), cap) for _ in range(n_users)]


def chat_groups(n_members: int, group_size: int) -> list[list[int]]:
    """Consecutive member indexes cut into groups (a too-small last group is merged in)."""
    if group_size < 2:
        raise ValueError("a conversation needs at least 2 members")
    groups = [list(range(i, min(i + group_size, n_members)))
              for i in range(0, n_members, group_size)]
    if len(groups) > 1 and len(groups[-1]) < 2:
        groups[-2].extend(groups.pop())
    return [g for g in groups if len(g) >= 2]


WORDS = ("pulse social event meetup coffee code python async latency graph friends music "
         "travel photo weekend launch release morning evening city park run bike book idea "
         "team sprint demo bug fix deploy cloud data stream chat feed like share").split()


def sentences(count: int, *, seed: int = 3, min_words: int = 4, max_words: int = 24) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(min_words, max_words))).capitalize() + "."
            for _ in range(count)]
