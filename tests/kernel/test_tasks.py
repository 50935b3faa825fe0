"""Stopping a background task: cancelled, and its own cleanup finished before the caller goes on."""
from __future__ import annotations

import asyncio

import pytest

from kernel.tasks import cancel_and_wait

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_cancel_and_wait_returns_after_the_tasks_cleanup():
    steps: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            steps.append("cleaned up")

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and steps == ["cleaned up"]


async def test_cancel_and_wait_takes_none_and_finished_tasks():
    await cancel_and_wait(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)
    assert done.done() and not done.cancelled()
