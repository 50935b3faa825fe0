"""What the domain services need from the real-time layer, without importing it
(services never import Socket.IO). ``realtime/`` provides the implementation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from server.services.privacy.contributions import ErasureStep

# Pushed with ``replay=False``, this event is never sent to clients: every instance
# closes the recipients' sockets instead (e.g. all sessions revoked by an erasure).
DISCONNECT_USER = "pulse:disconnect"
# The same for the sockets opened with given sessions only: data ``{"token_hashes": [hex]}``.
DISCONNECT_SESSIONS = "pulse:disconnect-sessions"
# Never sent to clients either: every instance forgets the conversations named in the data
# (``{"conversation_ids": [hex]}``) from its membership cache (their members changed).
CONVERSATIONS_CHANGED = "pulse:conversations-changed"


@dataclass(frozen=True)
class Push:
    """One replayed event for ``Pusher.push_many``: as ``push``'s arguments."""

    user_ids: list[str]
    event: str
    data: dict[str, Any]
    once_key: str | None = None


class Pusher(Protocol):
    async def push(self, user_ids: list[str], event: str, data: dict[str, Any], *, replay: bool = True,
                   once_key: str | None = None) -> None:
        """Deliver ``event`` to every socket of each user, on whichever instance it is.
        ``replay=True``: appended to the user's offset log (``offset`` is added to the
        data) so a reconnecting client gets it; ``False`` for ephemeral events (typing).
        ``once_key`` (replayed events): pushing again with the same key and recipients
        delivers nothing more, so a push whose outcome is unknown can be retried."""

    async def push_many(self, pushes: list[Push]) -> None:
        """Several replayed pushes in one round trip, delivered in this order (each
        recipient's sockets get them in it). Raises when they did not all get through;
        which did is then unknown (a ``once_key`` makes pushing them again safe)."""


class Presence(Protocol):
    async def online(self, user_ids: list[str]) -> list[str]:
        """Those of ``user_ids`` with at least one connected socket on any instance."""


# user id -> the users whose replay logs got events about them (from the context that
# pushed those events).
ToldAbout = Callable[[str], Awaitable[list[str]]]


class RealtimeErasure(Protocol):
    def erasure_steps(self, told_about: Sequence[ToldAbout]) -> list["ErasureStep"]:
        """The real-time layer's part of an erasure: the entries about the user in the
        replay logs of those ``told_about`` names (read before the contexts erase what
        tells them), and the user's presence records."""
