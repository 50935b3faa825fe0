"""The lag arithmetic of the replica monitor, on a clock the test moves (the monitor
itself, against a real streaming replica, is in test_replica.py)."""
from __future__ import annotations

from storage.postgres.replica_lag import MAX_PENDING_SAMPLES, ReplicaLag


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lag_is_the_age_of_the_oldest_position_not_replayed():
    clock = Clock()
    lag = ReplicaLag(clock)
    assert lag.seconds() is None  # not measured yet
    lag.primary_at(100.0, 10)
    lag.replica_replayed(10)
    assert lag.seconds() == 0.0 and lag.replayed == 10

    lag.primary_at(100.0, 20)  # a write at t=100
    clock.now = 100.05
    lag.primary_at(100.05, 30)
    lag.replica_replayed(10)
    assert abs(lag.seconds() - 0.05) < 1e-9
    clock.now = 100.3
    lag.replica_replayed(25)  # past the first write, not the second
    assert abs(lag.seconds() - 0.25) < 1e-9 and lag.replayed == 25
    lag.replica_replayed(30)
    assert lag.seconds() == 0.0


def test_an_unchanged_position_keeps_its_first_time():
    clock = Clock()
    lag = ReplicaLag(clock)
    lag.primary_at(100.0, 20)
    lag.primary_at(101.0, 20)  # nothing new written: the write is still 2 s old at t=102
    clock.now = 102.0
    lag.replica_replayed(10)
    assert lag.seconds() == 2.0


def test_a_stuck_replica_keeps_bounded_samples_and_never_understates():
    clock = Clock()
    lag = ReplicaLag(clock)
    for i in range(MAX_PENDING_SAMPLES * 2):
        lag.primary_at(100.0 + i, i + 1)
    clock.now = 100.0 + MAX_PENDING_SAMPLES * 2
    lag.replica_replayed(0)
    assert len(lag._pending) == MAX_PENDING_SAMPLES
    assert lag.seconds() == MAX_PENDING_SAMPLES * 2  # still measured from the first write
    # Replaying past every sample kept but one: the last one holds the newest position.
    lag.replica_replayed(MAX_PENDING_SAMPLES * 2 - 1)
    assert lag.seconds() > 0
    lag.replica_replayed(MAX_PENDING_SAMPLES * 2)
    assert lag.seconds() == 0.0
