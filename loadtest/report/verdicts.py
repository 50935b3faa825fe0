"""Verdicts: the targets of ``loadtest/targets.toml`` judged against a run's statistics,
whole-run or per load step."""
from __future__ import annotations

import fnmatch
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from loadtest.report.records import EndpointStats, LagSample, MongoOpsSample, PoolSample, Sample
from loadtest.report.stats import (
    Step,
    mongo_average_ms,
    pool_average_utilisation,
    pool_pressure,
    replication_lag_percentile_ms,
    stats_from_samples,
    steady_windows,
    with_previous,
)

DEFAULT_TARGETS = Path(__file__).resolve().parents[1] / "targets.toml"


@dataclass(frozen=True)
class Target:
    name: str
    metric: str
    patterns: tuple[str, ...] = ()
    limit: float = math.nan
    origin: str = "ours"
    strict: bool = False          # "<" instead of "<="
    baseline: str | None = None
    at_least: bool = False        # the value must reach the limit (capacity)
    kind: str | None = None       # mongo_avg: "read" or "write"


@dataclass
class Result:
    target: Target
    value: float | None
    passed: bool | None           # None: no data to judge
    detail: str = ""
    endpoints: list[str] = field(default_factory=list)


def load_targets(path: Path = DEFAULT_TARGETS) -> list[Target]:
    config = tomllib.loads(Path(path).read_text())
    groups = config.get("groups", {})
    targets = []
    for raw in config.get("target", []):
        patterns = list(raw.get("patterns", []))
        if "group" in raw:
            if raw["group"] not in groups:
                raise ValueError(f"target {raw['name']!r}: unknown group {raw['group']!r}")
            patterns += groups[raw["group"]]
        limit = raw.get("limit_ms", raw.get("limit"))
        if limit is None:
            raise ValueError(f"target {raw['name']!r} has no limit")
        targets.append(Target(name=raw["name"], metric=raw["metric"], patterns=tuple(patterns),
                              limit=float(limit), origin=raw.get("origin", "ours"),
                              strict=bool(raw.get("strict", False)),
                              baseline=raw.get("baseline"),
                              at_least=bool(raw.get("at_least", False)),
                              kind=raw.get("kind")))
    return targets


def matching(stats: Iterable[EndpointStats], patterns: Iterable[str]) -> list[EndpointStats]:
    patterns = list(patterns)
    # Locust names contain literal braces ("{id}"); fnmatch treats only *?[ specially.
    return [s for s in stats if s.count > 0
            and any(fnmatch.fnmatchcase(s.key, p.replace("[", "[[]")) for p in patterns)]


def _compare(value: float, target: Target) -> bool:
    if target.at_least:
        return value > target.limit if target.strict else value >= target.limit
    return value < target.limit if target.strict else value <= target.limit


def evaluate(targets: Iterable[Target], stats: list[EndpointStats],
             pool: list[PoolSample] | None = None,
             baselines: dict | None = None,
             mongo: list[MongoOpsSample] | None = None,
             lag: list[LagSample] | None = None) -> list[Result]:
    results = []
    for target in targets:
        if target.metric in ("pool_average_utilisation", "replication_lag_p99"):
            # Sampled by the bench while locust ran (loadtest/monitoring.py), not per request.
            figure = (pool_average_utilisation(pool or []) if target.metric == "pool_average_utilisation"
                      else replication_lag_percentile_ms(lag or []))
            if figure is None:
                results.append(Result(target, None, None, "no pool samples" if target.metric.startswith("pool")
                                      else "no replica (no replication lag samples)"))
            else:
                results.append(Result(target, figure[0], _compare(figure[0], target), figure[1]))
            continue
        if target.metric == "mongo_avg":
            measured = mongo_average_ms(mongo or [], target.kind or "")
            if measured is None:
                results.append(Result(target, None, None, f"no MongoDB {target.kind} timings"))
            else:
                value, commands = measured
                results.append(Result(target, value, _compare(value, target),
                                      f"{commands} {target.kind} commands, timed by the driver"))
            continue
        if target.metric == "measured":
            # A figure measured outside locust (baselines.json), e.g. capacity.
            value = (baselines or {}).get(target.baseline or "")
            if value is None:
                results.append(Result(target, None, None, f"not measured: {target.baseline}"))
            else:
                results.append(Result(target, float(value), _compare(float(value), target),
                                      target.baseline or ""))
            continue
        hits = matching(stats, target.patterns)
        names = [s.key for s in hits]
        if target.metric == "pool_utilisation":
            pressure = pool_pressure(pool or [])
            if pressure is None:
                results.append(Result(target, None, None, "no pool samples"))
                continue
            value, detail = pressure
            results.append(Result(target, value, _compare(value, target), detail))
            continue
        if not hits:
            results.append(Result(target, None, None, "no requests matched"))
            continue
        if target.metric != "failure_ratio":
            # Latency of answers that are mostly errors (e.g. 404 from an endpoint not
            # served yet) says nothing about the target.
            failing = [s.key for s in hits if s.failures * 2 > s.count]
            hits = [s for s in hits if s.failures * 2 <= s.count]
            if not hits:
                results.append(Result(target, None, None,
                                      f"mostly failed: {', '.join(failing)}", failing))
                continue
        total = sum(s.count for s in hits)
        if target.metric == "avg":
            value = sum(s.avg * s.count for s in hits) / total
            detail = f"weighted over {total} requests"
        elif target.metric in ("p50", "p95", "p99", "max"):
            worst = max(hits, key=lambda s: getattr(s, target.metric))
            value = getattr(worst, target.metric)
            detail = f"worst: {worst.key}" if len(hits) > 1 else ""
        elif target.metric == "failure_ratio":
            value = sum(s.failures for s in hits) / total
            detail = f"{sum(s.failures for s in hits)} of {total} failed"
        elif target.metric == "baseline_ratio":
            reference = (baselines or {}).get(target.baseline or "")
            if not reference:
                results.append(Result(target, None, None, f"no baseline {target.baseline}",
                                      names))
                continue
            worst = max(hits, key=lambda s: s.p99)
            value = worst.p99 / float(reference)
            detail = f"{worst.p99:.1f} ms vs baseline {float(reference):.1f} ms"
        else:
            raise ValueError(f"unknown metric {target.metric!r}")
        if math.isnan(value):
            results.append(Result(target, None, None, "no value", names))
            continue
        results.append(Result(target, value, _compare(value, target), detail, names))
    return results


@dataclass
class StepResult:
    step: Step
    stats: list[EndpointStats]
    results: list[Result]

    @property
    def failure_ratio(self) -> float:
        total = sum(s.count for s in self.stats)
        return sum(s.failures for s in self.stats) / total if total else 0.0

    @property
    def all_passed(self) -> bool:
        judged = [r for r in self.results if r.passed is not None]
        return bool(judged) and all(r.passed for r in judged)


def evaluate_steps(targets: list[Target], samples: list[Sample], steps: list[Step],
                   pool: list[PoolSample] | None = None, baselines: dict | None = None,
                   pool_t0: float | None = None,
                   mongo: list[MongoOpsSample] | None = None,
                   lag: list[LagSample] | None = None) -> list[StepResult]:
    out = []
    for step in steps:
        window = [s for s in samples if step.start <= s.t < step.end]
        stats = stats_from_samples(window, step.end - step.start)
        step_pool = step_mongo = step_lag = None
        if pool and pool_t0 is not None:
            step_pool = with_previous(pool, pool_t0 + step.start, pool_t0 + step.end)
        if mongo and pool_t0 is not None:
            step_mongo = with_previous(mongo, pool_t0 + step.start, pool_t0 + step.end)
        if lag and pool_t0 is not None:
            step_lag = [x for x in lag if pool_t0 + step.start <= x.t < pool_t0 + step.end]
        out.append(StepResult(step, stats, evaluate(targets, stats, step_pool, baselines, step_mongo, step_lag)))
    return out


def judged_step(steps: list[StepResult], max_failure_ratio: float = 0.01) -> StepResult:
    """The highest step the deployment still served (failures within bounds): targets are
    judged there. Past the knee everything times out and says nothing more."""
    served = [sr for sr in steps if sr.failure_ratio <= max_failure_ratio
              and any(s.count for s in sr.stats)]
    return served[-1] if served else steps[0]


def judge_run(targets: list[Target], stats: list[EndpointStats], samples: list[Sample], plan: dict | None,
              pool: list[PoolSample], baselines: dict,
              mongo: list[MongoOpsSample],
              lag: list[LagSample] | None = None) -> tuple[list[StepResult], list[Result]]:
    """(per-step results, the verdicts): per load step when the raw samples and the step
    plan are there, the targets judged at the highest step served; else on locust's
    whole-run statistics."""
    steps: list[StepResult] = []
    if samples and plan:
        windows = steady_windows(plan["users"], plan["step_seconds"], plan["settle_seconds"])
        steps = evaluate_steps(targets, samples, windows, pool, baselines, plan.get("t0"), mongo, lag)
    if not steps:
        return steps, evaluate(targets, stats, pool, baselines, mongo, lag)
    # Capacity figures are not per step: take them from the whole run.
    return steps, [r for r in judged_step(steps).results if r.target.metric != "measured"] + [
        r for r in evaluate(targets, stats, pool, baselines) if r.target.metric == "measured"]
