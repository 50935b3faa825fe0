"""Background tasks: the one way they are stopped."""
from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancels ``task`` (``None``: nothing to stop) and waits until it has finished, its
    own cleanup included, so nothing it holds outlives the caller's shutdown."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
