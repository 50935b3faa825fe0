"""Step load for ``make bench``: add users in steps, hold each step, stop after the last.

Configured from the environment so ``loadtest.bench`` can size it to the machine:
``PULSE_BENCH_STEP_USERS`` (users added per step), ``PULSE_BENCH_STEPS`` (how many),
``PULSE_BENCH_STEP_SECONDS`` (hold per step), ``PULSE_BENCH_SPAWN_RATE``.
"""
from __future__ import annotations

import os

from locust import LoadTestShape


def step_plan(step_users: int, steps: int, step_seconds: float):
    """[(end_time_s, users)] for each step."""
    return [((i + 1) * step_seconds, (i + 1) * step_users) for i in range(steps)]


class StepLoadShape(LoadTestShape):
    def __init__(self):
        super().__init__()
        self.plan = step_plan(int(os.environ.get("PULSE_BENCH_STEP_USERS", "40")),
                              int(os.environ.get("PULSE_BENCH_STEPS", "5")),
                              float(os.environ.get("PULSE_BENCH_STEP_SECONDS", "40")))
        self.spawn_rate = float(os.environ.get("PULSE_BENCH_SPAWN_RATE", "20"))

    def tick(self):
        run_time = self.get_run_time()
        for end, users in self.plan:
            if run_time < end:
                return users, self.spawn_rate
        return None
