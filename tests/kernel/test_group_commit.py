"""Group commit: a flush at once when idle, what comes meanwhile in the next one, in order,
an outcome per item, and an error of the whole flush for each of its items."""
from __future__ import annotations

import asyncio

import pytest

from kernel.group_commit import GroupCommit

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Recorder:
    """A flush function that records its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, items: list[int]) -> list[object]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_an_item_submitted_while_idle_is_flushed_at_once():
    flush = Recorder()
    commit = GroupCommit(flush, max_items=8, name="t")
    assert await asyncio.wait_for(commit.submit(1), 1) == 10
    assert flush.batches == [[1]]


async def test_items_arriving_while_a_flush_is_in_flight_go_together_in_the_next_one():
    flush = Recorder()
    flush.gate = asyncio.Event()
    commit = GroupCommit(flush, max_items=8, name="t")
    first = commit.submit(1)
    await asyncio.sleep(0)  # the flush of [1] starts and waits on the gate
    later = [commit.submit(i) for i in range(2, 6)]
    await asyncio.sleep(0)
    assert flush.batches == [[1]] and commit.queued == 4
    flush.gate.set()
    assert await asyncio.gather(first, *later) == [10, 20, 30, 40, 50]
    assert flush.batches == [[1], [2, 3, 4, 5]]


async def test_a_flush_takes_at_most_max_items_in_submission_order():
    flush = Recorder()
    commit = GroupCommit(flush, max_items=3, name="t")
    results = await asyncio.gather(*(commit.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert flush.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert commit.flushes == 3


async def test_one_items_failure_fails_only_that_item():
    commit = GroupCommit(Recorder(), max_items=8, name="t")
    good, bad, other = commit.submit(1), commit.submit(-1), commit.submit(2)
    assert await good == 10 and await other == 20
    with pytest.raises(ValueError, match="bad -1"):
        await bad


async def test_a_failed_flush_fails_each_of_its_items_with_the_same_error_and_the_next_flush_runs():
    calls = []

    async def flush(items):
        calls.append(list(items))
        if len(calls) == 1:
            await asyncio.sleep(0.01)
            raise ConnectionError("store down")
        return items

    commit = GroupCommit(flush, max_items=8, name="t")
    first = [commit.submit(i) for i in range(3)]
    await asyncio.sleep(0)
    after = commit.submit(9)  # queued behind the failing flush
    outcomes = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes) and len({id(o) for o in outcomes}) == 1
    assert await after == 9 and calls == [[0, 1, 2], [9]]


async def test_an_item_whose_caller_gave_up_before_its_flush_is_left_out():
    flush = Recorder()
    flush.gate = asyncio.Event()
    commit = GroupCommit(flush, max_items=8, name="t")
    first = commit.submit(1)
    await asyncio.sleep(0)
    abandoned, kept = commit.submit(2), commit.submit(3)
    abandoned.cancel()
    flush.gate.set()
    assert await first == 10 and await kept == 30
    assert flush.batches == [[1], [3]]


async def test_drain_waits_for_everything_submitted():
    flush = Recorder()
    flush.gate = asyncio.Event()
    commit = GroupCommit(flush, max_items=2, name="t")
    futures = [commit.submit(i) for i in range(5)]
    asyncio.get_running_loop().call_later(0.02, flush.gate.set)
    await commit.drain()
    assert all(f.done() for f in futures) and commit.queued == 0
    assert flush.batches == [[0, 1], [2, 3], [4]]
