"""Group commit of chat messages: the write path behind ``MessagingService.send_message``.

Sends that arrive on this instance while a write is in flight are written together, in
three stages, each a ``kernel.group_commit.GroupCommit`` (one flush at a time, in order):

1. **insert**: one ``insert_many(ordered=False)`` of the batch's new messages. Two sends
   of one (conversation, sender, client id) in a batch store one message and both get
   it; a send whose client id is stored already (a retry) gets the stored message, read
   back with one query per (conversation, sender). A document MongoDB refuses fails its
   own send only. The store not answering fails every send of the batch with the same
   ``StoreUnavailable`` (a 503, as a single send's did), and none of them goes further.
2. **record**: one ``bulk_write`` for the conversations of the stored messages, one update
   per conversation however many of its messages the flush holds (last message, each
   sender's read position, the recent messages: ``ConversationsRepo.record_new_messages``).
3. **push**: ``message:new`` to the members of each stored message, in the order they were
   stored, in one Redis round trip: delivery keeps the order of the sends. A failed push
   marks its messages ``pushPending`` (one write), so that a retried send pushes them.

Stage 1 hands its stored messages to stages 2 and 3 itself, in order, before any send
waiting on it resumes; a send returns once its message is recorded and pushed.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from kernel.errors import NotFound
from kernel.group_commit import GroupCommit
from server.services.ports import Push, Pusher
from storage.mongo.conversations import ConversationsRepo
from storage.mongo.messages import MessagesRepo

log = logging.getLogger("pulse.messaging")

# Sends written together at most (the documents of one insert_many, the pushes of one
# pipeline); more wait for the next flush. Conversation updates: one per conversation.
MAX_BATCH = 64


@dataclass(frozen=True)
class NewMessage:
    doc: dict[str, Any]  # the message document to insert
    conversation_id: ObjectId
    member_ids: tuple[str, ...]  # whom to push it to
    event_data: dict[str, Any]  # ``message:new``'s data

    @property
    def client_key(self) -> tuple[str, str, str]:
        return self.doc["conversationId"], self.doc["senderId"], self.doc["clientId"]


@dataclass(frozen=True)
class Stored:
    """A send's message as stored. ``recorded`` and ``pushed`` are the message's stages 2
    and 3 when this batch stored it (``pushed`` gives True once it is in the members' logs);
    None for a retry of a message stored before."""

    doc: dict[str, Any]
    created: bool
    recorded: asyncio.Future[None] | None = None
    pushed: asyncio.Future[bool] | None = None


class MessageWriter:
    def __init__(self, messages_repo: MessagesRepo, conversations_repo: ConversationsRepo,
                 pusher: Pusher | None, *, max_batch: int = MAX_BATCH) -> None:
        self.messages_repo = messages_repo
        self.conversations_repo = conversations_repo
        self.pusher = pusher
        self.inserts: GroupCommit[NewMessage, Stored] = GroupCommit(
            self._insert, max_items=max_batch, name="message-inserts")
        self.records: GroupCommit[NewMessage, None] = GroupCommit(
            self._record, max_items=4 * max_batch, name="conversation-updates")
        self.pushes: GroupCommit[NewMessage, bool] = GroupCommit(
            self._push, max_items=max_batch, name="message-pushes")

    def store(self, message: NewMessage) -> asyncio.Future[Stored]:
        """Queues the message for the next insert (synchronously: calls keep their order)."""
        return self.inserts.submit(message)

    async def drain(self) -> None:
        for stage in (self.inserts, self.records, self.pushes):
            await stage.drain()

    # --- stage 1 ------------------------------------------------------------------------

    async def _insert(self, batch: list[NewMessage]) -> list[Stored | BaseException]:
        firsts: dict[tuple[str, str, str], int] = {}  # client key -> its first send in the batch
        unique: list[NewMessage] = []
        for message in batch:
            if message.client_key not in firsts:
                firsts[message.client_key] = len(unique)
                unique.append(message)
        result = await self.messages_repo.insert_batch([m.doc for m in unique])
        outcomes: list[Stored | BaseException | None] = [None] * len(unique)
        retries = []
        for i, message in enumerate(unique):
            if i in result.refused:
                outcomes[i] = result.refused[i]
            elif i in result.duplicates:
                retries.append(i)
            else:
                recorded = self.records.submit(message)
                pushed = self.pushes.submit(message) if self.pusher is not None else None
                outcomes[i] = Stored(message.doc, True, recorded, pushed)
        if retries:
            try:
                originals = await self._originals([unique[i] for i in retries])
            except Exception as exc:  # noqa: BLE001 - only the retries need the originals
                originals, failure = {}, exc
            else:
                failure = NotFound("No such message.")  # the index said it exists: erased since
            for i in retries:
                original = originals.get(unique[i].client_key)
                outcomes[i] = Stored(original, False) if original is not None else failure
        out: list[Stored | BaseException] = []
        for message in batch:
            i = firsts[message.client_key]
            outcome = outcomes[i]
            assert outcome is not None
            if unique[i] is not message and isinstance(outcome, Stored):
                outcome = Stored(outcome.doc, False, outcome.recorded, outcome.pushed)  # sent twice in the batch
            out.append(outcome)
        return out

    async def _originals(self, retries: list[NewMessage]) -> dict[tuple[str, str, str], dict[str, Any]]:
        by_sender: dict[tuple[str, str], list[str]] = {}
        for message in retries:
            conversation_id, sender_id, client_id = message.client_key
            by_sender.setdefault((conversation_id, sender_id), []).append(client_id)
        found = await asyncio.gather(*(self.messages_repo.get_by_client_ids(c, s, ids)
                                       for (c, s), ids in by_sender.items()))
        return {(d["conversationId"], d["senderId"], d["clientId"]): d for docs in found for d in docs}

    # --- stage 2 ------------------------------------------------------------------------

    async def _record(self, batch: list[NewMessage]) -> list[None]:
        by_conversation: dict[ObjectId, list[dict[str, Any]]] = {}
        for message in batch:
            by_conversation.setdefault(message.conversation_id, []).append(message.doc)
        await self.conversations_repo.record_new_messages(by_conversation)
        return [None] * len(batch)

    # --- stage 3 ------------------------------------------------------------------------

    async def _push(self, batch: list[NewMessage]) -> list[bool]:
        assert self.pusher is not None
        try:
            await self.pusher.push_many([
                Push(list(m.member_ids), "message:new", m.event_data, once_key=f"message:{m.doc['_id']}")
                for m in batch])
        except Exception:  # noqa: BLE001 - stored is what matters; a retried send pushes them
            log.exception("pushing %d messages failed; a retry of their sends pushes them", len(batch))
            try:
                await self.messages_repo.mark_push_pending([m.doc["_id"] for m in batch])
            except Exception:  # noqa: BLE001 - a retry within the push window pushes them anyway
                log.exception("could not mark %d messages as not pushed", len(batch))
            return [False] * len(batch)
        return [True] * len(batch)
