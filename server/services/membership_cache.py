"""Who is in a conversation, kept in this process for the send path and typing.

A send needs the conversation's members (to check the sender is one and to know whom to
push to); reading them from MongoDB is a round trip per send. They change rarely
(today: an erased user leaves every conversation, an emptied one is deleted), and each
change is announced on the fan-out channel (``ports.CONVERSATIONS_CHANGED``): every
instance forgets those conversations.

An entry is trusted only while the channel that carries those announcements is up and
has not been lost since the entry was read: ``epoch()`` is the number of the current
subscription, or None while there is none (then nothing is cached). An announcement
lost with a broken subscription therefore never leaves a stale entry behind; a load
that an announcement overtook is not kept either. Entries also expire after
``ttl_seconds``, whatever happens.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

from bson import ObjectId


@dataclass(frozen=True)
class Members:
    conversation_id: ObjectId
    member_ids: tuple[str, ...]


@dataclass(frozen=True)
class LoadTicket:
    """What the cache looked like when a load from MongoDB started."""

    epoch: int | None
    changes: int


class MembershipCache:
    def __init__(self, epoch: Callable[[], int | None], *, max_entries: int = 10_000,
                 ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.epoch = epoch
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        # conversation id (its ObjectId's hex) -> (members, subscription epoch, expiry)
        self._entries: OrderedDict[str, tuple[Members, int, float]] = OrderedDict()
        self._changes = 0  # bumped by every forget/clear: a load it overtook is not kept

    def get(self, conversation_id: str) -> Members | None:
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        members, epoch, expires = entry
        if epoch != self.epoch() or self.clock() >= expires:
            del self._entries[conversation_id]
            return None
        return members

    def ticket(self) -> LoadTicket:
        return LoadTicket(self.epoch(), self._changes)

    def put(self, conversation_id: str, members: Members, ticket: LoadTicket) -> None:
        """Keeps what a load started with ``ticket`` read, unless something changed since."""
        if ticket.epoch is None or ticket.epoch != self.epoch() or ticket.changes != self._changes:
            return
        self._entries[conversation_id] = (members, ticket.epoch, self.clock() + self.ttl_seconds)
        self._entries.move_to_end(conversation_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, conversation_ids: Iterable[str]) -> None:
        self._changes += 1
        for conversation_id in conversation_ids:
            self._entries.pop(conversation_id, None)

    def clear(self) -> None:
        self._changes += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
