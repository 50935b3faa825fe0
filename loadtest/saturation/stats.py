"""The arithmetic of the saturation bench: summaries, ratios, CPU per request, chat steps.

Pure functions over recorded figures (no I/O), so that they are unit-tested on data
recorded from real runs.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from loadtest.report import exact_percentile

# The fraction of the closed-loop maximum offered open-loop, where p99 is read.
OPEN_LOOP_FRACTION = 0.7


def _ms(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 3)


def percentiles(samples: Iterable[float], qs: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float | None]:
    """Nearest-rank percentiles, keyed ``p50``, ``p90``, ``p99``, ``p99.9`` (ms in, ms out)."""
    ordered = sorted(samples)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q:g}_ms"] = _ms(exact_percentile(ordered, q))
    out["max_ms"] = _ms(ordered[-1]) if ordered else None
    return out


def latency_summary(tally: Any) -> dict:
    """One open- or closed-loop run of :mod:`loadtest.openloop` (a ``Tally``) as figures.

    ``ok`` are 2xx answers; errors are other statuses plus failures to get one (connect,
    timeout, closed, unsent: due but never sent before the end). ``per_second`` is answers of
    any status per second of the run. ``dispatch_lag_p99_ms`` is how late the client itself
    ran behind its timetable; ``client_cpu_percent`` its own CPU (% of one core)."""
    answered = sum(tally.statuses.values())
    ok = sum(n for status, n in tally.statuses.items() if 200 <= int(status) < 300)
    failures = sum(tally.errors.values())
    out = {"offered": tally.offered, "answered": answered, "ok": ok,
           "errors": (answered - ok) + failures,
           "error_kinds": {**{f"http {s}": n for s, n in sorted(tally.statuses.items())
                              if not 200 <= int(s) < 300}, **tally.errors},
           "seconds": round(tally.seconds, 3),
           "per_second": round(answered / tally.seconds, 1) if tally.seconds else None,
           **percentiles(tally.latencies_ms)}
    if tally.dispatch_lag_ms:
        out["dispatch_lag_p99_ms"] = _ms(exact_percentile(sorted(tally.dispatch_lag_ms), 99))
    out["client_cpu_percent"] = round(100 * tally.cpu_seconds / tally.seconds, 1) if tally.seconds else None
    return out


def ratio(value: float | None, baseline: float | None, digits: int = 3) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, digits)


def open_loop_rate(closed_loop_max: float, fraction: float = OPEN_LOOP_FRACTION) -> float:
    """The fixed rate offered open-loop: a fraction of the closed-loop maximum, whole req/s."""
    return max(1.0, math.floor(closed_loop_max * fraction))


def cpu_per_request_us(cpu_seconds: Mapping[str, float], requests: int,
                       groups: Mapping[str, Iterable[str]]) -> dict[str, float | None]:
    """µs of CPU per request (or delivery) for named sums of process groups, e.g.
    ``{"pulse": ["pulse-a", "pulse-b"], "stores": ["postgresql", "redis", ...]}``."""
    out: dict[str, float | None] = {}
    for name, members in groups.items():
        total = sum(cpu_seconds.get(m, 0.0) for m in members)
        out[name] = round(1e6 * total / requests, 1) if requests else None
    return out


def offered_capacity_check(summary: Mapping[str, Any], rate: float, *, max_lag_ms: float = 5.0,
                           max_client_cpu: float = 90.0) -> tuple[bool, str]:
    """Whether an open-loop client offered ``rate``: every due request sent, its timetable
    kept (dispatch lag p99 ≤ ``max_lag_ms``) and its own CPU below ``max_client_cpu`` % of
    a core. (The server may still have been too slow: that is what is measured.)"""
    problems = []
    unsent = summary.get("error_kinds", {}).get("unsent", 0)
    if unsent:
        problems.append(f"{unsent} due requests never sent")
    lag = summary.get("dispatch_lag_p99_ms")
    if lag is not None and lag > max_lag_ms:
        problems.append(f"timetable p99 {lag:g} ms late")
    cpu = summary.get("client_cpu_percent")
    if cpu is not None and cpu > max_client_cpu:
        problems.append(f"client at {cpu:g} % of a core")
    if problems:
        return False, "; ".join(problems)
    return True, f"offered {rate:g}/s: timetable p99 lag {lag} ms, client {cpu} % of a core"


# --- chat steps ---------------------------------------------------------------------------

# A chat step keeps up when this share of its deliveries arrived by the end of its drain and
# its p99 delivery latency (from each message's scheduled send time) is at most the limit
# (the goal for persisted chat). It lags, and the climb stops, when far less arrived
# or deliveries are late by seconds: a backlog that would weigh on the next step.
MIN_DELIVERED = 0.99
MAX_P99_MS = 50.0
LAG_DELIVERED = 0.95
LAG_P99_MS = 1000.0


def chat_step(offered_messages: int, group_size: int, seconds: float, latencies_ms: list[float],
              acked: int, ack_errors: int, unacked: int) -> dict:
    """One step of the stepped chat run, from what the clients recorded: deliveries are
    those that arrived by the end of the drain (``latencies_ms``, one per delivery); acks
    either came (``acked``), came as errors or timed out (``ack_errors``), or had not come by
    the end of the drain (``unacked``)."""
    expected = offered_messages * group_size
    delivered = len(latencies_ms)
    step = {"offered_per_second": round(expected / seconds, 1) if seconds else None,
            "messages": offered_messages, "expected": expected, "delivered": delivered,
            "delivered_ratio": round(delivered / expected, 4) if expected else None,
            "delivered_per_second": round(delivered / seconds, 1) if seconds else None,
            "acked": acked, "ack_errors": ack_errors, "unacked": unacked,
            **percentiles(latencies_ms, (50, 99))}
    return step


def keeps_up(step: Mapping[str, Any], min_delivered: float = MIN_DELIVERED,
             max_p99_ms: float = MAX_P99_MS) -> bool:
    ratio_ = step.get("delivered_ratio")
    p99 = step.get("p99_ms")
    return ratio_ is not None and ratio_ >= min_delivered and p99 is not None and p99 <= max_p99_ms


def lags(step: Mapping[str, Any], lag_delivered: float = LAG_DELIVERED,
         lag_p99_ms: float = LAG_P99_MS) -> bool:
    ratio_ = step.get("delivered_ratio")
    p99 = step.get("p99_ms")
    return ratio_ is None or ratio_ < lag_delivered or p99 is None or p99 > lag_p99_ms


def sustained_maximum(steps: Iterable[Mapping[str, Any]], min_delivered: float = MIN_DELIVERED,
                      max_p99_ms: float = MAX_P99_MS) -> float:
    """Deliveries/s of the highest step that kept up (0 when none did)."""
    kept = [s["delivered_per_second"] for s in steps if keeps_up(s, min_delivered, max_p99_ms)]
    return max(kept, default=0.0)
