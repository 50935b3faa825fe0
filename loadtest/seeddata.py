"""What the seed wrote (``seed.json``) and how locust users share it out."""
from __future__ import annotations

import bisect
import itertools
import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

API = "/api/v1"
DEFAULT_SEED_FILE = Path(__file__).parent / "results" / "seed.json"


@dataclass
class SeedData:
    password: str
    users: list[dict]                 # [{id, username}], index = seed index
    chat_members: int                 # users[0:chat_members] are in chat groups
    conversations: list[dict]         # [{id, members: [seed index, ...]}]
    post_ids: list[str]
    event_ids: list[str]
    popular: list[int]                # seed indexes, most followed first
    tokens: dict[int, str] = field(default_factory=dict)   # pre-issued, by seed index
    _claims: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _popular_cum: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "SeedData":
        raw = json.loads(Path(path).read_text())
        return cls(password=raw["password"], users=raw["users"],
                   chat_members=raw.get("chat_members", 0),
                   conversations=raw.get("conversations", []),
                   post_ids=raw.get("post_ids", []), event_ids=raw.get("event_ids", []),
                   popular=raw.get("popular", []),
                   tokens={int(k): v for k, v in raw.get("tokens", {}).items()})

    def claim(self, pool: str) -> int:
        """Next seed index of a pool ("chat": chat members, else the other users), cyclic."""
        with self._lock:
            counter = self._claims.setdefault(pool, itertools.count())
            n = next(counter)
        return pool_index(pool, n, self.chat_members, len(self.users))

    def conversation_of(self, member: int) -> dict | None:
        for conversation in self._by_member().get(member, []):
            return conversation
        return None

    def _by_member(self) -> dict[int, list[dict]]:
        index = getattr(self, "_member_index", None)
        if index is None:
            index = {}
            for conversation in self.conversations:
                for member in conversation["members"]:
                    index.setdefault(member, []).append(conversation)
            self._member_index = index
        return index

    def popular_user(self, rng: random.Random) -> dict:
        """A user to look at, skewed towards the most followed ones."""
        if not self.popular:
            return rng.choice(self.users)
        if not self._popular_cum:
            self._popular_cum = list(itertools.accumulate(1.0 / (r + 1)
                                                          for r in range(len(self.popular))))
        if rng.random() < 0.3:
            return rng.choice(self.users)
        pick = bisect.bisect_right(self._popular_cum, rng.random() * self._popular_cum[-1])
        return self.users[self.popular[min(pick, len(self.popular) - 1)]]


def pool_index(pool: str, n: int, chat_members: int, n_users: int) -> int:
    """Seed index of the n-th account of a pool ("chat", "rest", "notify"), cyclic.

    Chat members are users[0:chat_members]; the REST and notification pools share the
    rest from opposite halves so that they do not collide; the very last user is kept
    for the fan-out host.
    """
    if pool == "chat":
        if not chat_members:
            raise LookupError("the seed has no chat members")
        return n % chat_members
    others = n_users - chat_members - 1
    if others <= 0:
        return n % n_users
    offset = others // 2 if pool == "notify" else 0
    return chat_members + (offset + n) % others


_loaded: dict[str, SeedData] = {}


def seed_data(path: str | Path | None) -> SeedData:
    key = str(path or DEFAULT_SEED_FILE)
    if key not in _loaded:
        _loaded[key] = SeedData.load(key)
    return _loaded[key]
