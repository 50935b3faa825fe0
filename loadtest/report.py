"""Turn a locust run (CSV), pool samples and baselines into report.md + plots + pass/fail.

    python -m loadtest.report --results loadtest/results [--targets loadtest/targets.toml]

The evaluation part uses only the standard library (unit-tested without the ``load``
extra); matplotlib is imported only to draw.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

DEFAULT_TARGETS = Path(__file__).with_name("targets.toml")
STATS_CSV = "locust_stats.csv"
HISTORY_CSV = "locust_stats_history.csv"
FAILURES_CSV = "locust_failures.csv"
POOL_CSV = "pg_pool.csv"
MONGO_CSV = "mongo_ops.csv"
SAMPLES_CSV = "samples.csv"
CPU_CSV = "cpu.csv"
BASELINES_JSON = "baselines.json"
RUN_JSON = "run.json"
PROFILE_RAW = "profile-pulse-a.txt"
OUR_CODE = ("server/", "api/", "storage/", "realtime/")
# Files an instance holds besides client sockets (listener, store pools, logs, epoll, ...).
FILES_BESIDES_SOCKETS = 100


@dataclass(frozen=True)
class EndpointStats:
    type: str
    name: str
    count: int
    failures: int
    avg: float
    p50: float
    p95: float
    p99: float
    max: float
    rps: float

    @property
    def key(self) -> str:
        return f"{self.type} {self.name}"


def _num(value: str | None) -> float:
    if value in (None, "", "N/A"):
        return math.nan
    return float(value)


def read_stats(path: Path) -> list[EndpointStats]:
    """Per-endpoint rows of locust's ``*_stats.csv`` (the Aggregated row left out)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated" or not row.get("Type"):
                continue
            rows.append(EndpointStats(
                type=row["Type"], name=row["Name"], count=int(row["Request Count"]),
                failures=int(row["Failure Count"]), avg=_num(row["Average Response Time"]),
                p50=_num(row.get("50%")), p95=_num(row.get("95%")), p99=_num(row.get("99%")),
                max=_num(row["Max Response Time"]), rps=_num(row["Requests/s"])))
    return rows


@dataclass(frozen=True)
class Sample:
    t: float           # seconds since the test started
    type: str
    name: str
    ms: float
    failed: bool


def read_samples(path: Path) -> list[Sample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [Sample(float(r["t"]), r["type"], r["name"], float(r["ms"]), r["failed"] == "1")
                for r in csv.DictReader(handle)]


def exact_percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, rank 1000.
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[rank - 1]


def stats_from_samples(samples: Iterable[Sample], seconds: float) -> list[EndpointStats]:
    """Per-endpoint stats (exact percentiles) of a window of samples."""
    by_key: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        by_key.setdefault((sample.type, sample.name), []).append(sample)
    out = []
    for (type_, name), group in by_key.items():
        times = sorted(s.ms for s in group)
        out.append(EndpointStats(
            type=type_, name=name, count=len(group), failures=sum(s.failed for s in group),
            avg=sum(times) / len(times), p50=exact_percentile(times, 50),
            p95=exact_percentile(times, 95), p99=exact_percentile(times, 99), max=times[-1],
            rps=len(group) / seconds if seconds > 0 else math.nan))
    return out


@dataclass(frozen=True)
class Step:
    index: int
    users: int
    start: float       # steady window, seconds since test start
    end: float


def steady_windows(users: list[int], step_seconds: float, settle_seconds: float) -> list[Step]:
    """The part of each load step after the ramp-up has settled."""
    return [Step(i + 1, u, i * step_seconds + settle_seconds, (i + 1) * step_seconds)
            for i, u in enumerate(users)]


@dataclass
class StepResult:
    step: Step
    stats: list[EndpointStats]
    results: list["Result"]

    @property
    def failure_ratio(self) -> float:
        total = sum(s.count for s in self.stats)
        return sum(s.failures for s in self.stats) / total if total else 0.0

    @property
    def all_passed(self) -> bool:
        judged = [r for r in self.results if r.passed is not None]
        return bool(judged) and all(r.passed for r in judged)


def evaluate_steps(targets: list["Target"], samples: list[Sample], steps: list[Step],
                   pool: list["PoolSample"] | None = None, baselines: dict | None = None,
                   pool_t0: float | None = None,
                   mongo: list["MongoOpsSample"] | None = None) -> list[StepResult]:
    out = []
    for step in steps:
        window = [s for s in samples if step.start <= s.t < step.end]
        stats = stats_from_samples(window, step.end - step.start)
        step_pool = step_mongo = None
        if pool and pool_t0 is not None:
            step_pool = with_previous(pool, pool_t0 + step.start, pool_t0 + step.end)
        if mongo and pool_t0 is not None:
            step_mongo = with_previous(mongo, pool_t0 + step.start, pool_t0 + step.end)
        out.append(StepResult(step, stats, evaluate(targets, stats, step_pool, baselines, step_mongo)))
    return out


@dataclass(frozen=True)
class PoolSample:
    t: float
    instance: str
    size: float
    in_use: float
    # The most in use at once in the instance's last seconds, and its running count of
    # acquisitions that had to wait because every connection was busy: pressure between two
    # samples is not missed.
    in_use_peak: float = 0.0
    exhausted: float = 0.0

    @property
    def key(self) -> str:
        return self.instance

    @property
    def most_in_use(self) -> float:
        return max(self.in_use, self.in_use_peak)


def read_pool_samples(path: Path) -> list[PoolSample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [PoolSample(float(r["t"]), r["instance"], float(r["size"]), float(r["in_use"]),
                           float(r.get("in_use_peak") or r["in_use"]), float(r.get("exhausted") or 0))
                for r in csv.DictReader(handle)]


@dataclass(frozen=True)
class MongoOpsSample:
    """Running totals of one instance's MongoDB commands of a kind ("read" or "write"), as
    the driver timed them, at time t."""
    t: float
    instance: str
    kind: str
    count: float
    sum_seconds: float

    @property
    def key(self) -> str:
        return f"{self.instance}/{self.kind}"


def read_mongo_samples(path: Path) -> list[MongoOpsSample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [MongoOpsSample(float(r["t"]), r["instance"], r["kind"], float(r["count"]),
                               float(r["sum_seconds"])) for r in csv.DictReader(handle)]


def with_previous(samples: list, start: float, end: float) -> list:
    """The samples inside [start, end) plus, per series (``key``), the last one before start:
    the running totals that the window's increase is counted from."""
    before: dict[str, Any] = {}
    inside = []
    for sample in sorted(samples, key=lambda x: x.t):
        if sample.t < start:
            before[sample.key] = sample
        elif sample.t < end:
            inside.append(sample)
    return list(before.values()) + inside


def pool_pressure(samples: list[PoolSample]) -> tuple[float, str] | None:
    """(utilisation, detail) of the busiest instance over the samples: 1.0 when an acquisition
    had to wait for a busy pool between its first and last sample, else its most in use /
    size. A sample from before the window only provides the starting count of waits."""
    worst: tuple[float, str] | None = None
    for instance in sorted({x.instance for x in samples}):
        mine = sorted((x for x in samples if x.instance == instance and x.size > 0), key=lambda x: x.t)
        if len(mine) < 2:
            continue  # nothing after the starting sample
        waits = mine[-1].exhausted - mine[0].exhausted
        most, size = max(x.most_in_use for x in mine[1:]), max(x.size for x in mine[1:])
        value = 1.0 if waits > 0 else most / size
        if worst is None or value > worst[0]:
            worst = (value, f"max {most:.0f} of {size:.0f} in use, {waits:.0f} waits for a busy pool "
                            f"({instance})")
    return worst


def mongo_average_ms(samples: list[MongoOpsSample], kind: str) -> tuple[float, int] | None:
    """(average ms, commands) of the commands of ``kind`` between the first and the last
    sample of each instance; None without two samples."""
    seconds = count = 0.0
    for instance in {x.instance for x in samples if x.kind == kind}:
        mine = sorted((x for x in samples if x.kind == kind and x.instance == instance), key=lambda x: x.t)
        if len(mine) >= 2:
            seconds += mine[-1].sum_seconds - mine[0].sum_seconds
            count += mine[-1].count - mine[0].count
    if count <= 0:
        return None
    return seconds / count * 1000, int(count)


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
             mongo: list[MongoOpsSample] | None = None) -> list[Result]:
    results = []
    for target in targets:
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


def profile_summary(path: Path, top: int = 12) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's collapsed stacks: (samples, top self-time frames, top frames of our
    own code by inclusive time)."""
    if not path.exists():
        return 0, [], []
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            if any(part in frame for part in OUR_CODE) and "site-packages" not in frame:
                inclusive[frame] = inclusive.get(frame, 0) + n
    by_count = lambda d: sorted(d.items(), key=lambda kv: -kv[1])[:top]  # noqa: E731
    return total, by_count(own), by_count(inclusive)


# --- rendering ------------------------------------------------------------------------

def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:.1f}{unit}"


def result_rows(results: list[Result]) -> list[str]:
    # Figures measured outside locust are listed once, under their own heading.
    results = [r for r in results if r.target.metric != "measured"]
    rows = ["| target | origin | metric | limit | measured | verdict | note |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.target
        is_ms = t.metric in ("avg", "p50", "p95", "p99", "max")
        unit = " ms" if is_ms else "" if t.metric == "measured" else "ratio"
        sign = (">" if t.strict else "≥") if t.at_least else ("<" if t.strict else "≤")
        limit = f"{sign} {_fmt(t.limit, unit)}"
        verdict = {True: "PASS", False: "**FAIL**", None: "n/a"}[r.passed]
        rows.append(f"| {t.name} | {t.origin} | {t.metric} | {limit} | {_fmt(r.value, unit)} "
                    f"| {verdict} | {r.detail} |")
    return rows


def stats_rows(stats: list[EndpointStats]) -> list[str]:
    rows = ["| type | name | requests | failures | req/s | avg ms | p50 | p95 | p99 | max |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sorted(stats, key=lambda s: (s.type != "socketio", -s.count)):
        rows.append(f"| {s.type} | {s.name} | {s.count} | {s.failures} | {s.rps:.1f} "
                    f"| {s.avg:.1f} | {s.p50:.0f} | {s.p95:.0f} | {s.p99:.0f} | {s.max:.0f} |")
    return rows


STEP_COLUMNS = (("feed p99", "GET /api/v1/feed"), ("profile p99", "GET /api/v1/users/{id}"),
                ("chat delivery p99", "socketio chat delivery"),
                ("fan-out p99", "socketio notification fan-out"))


def cpu_rows(cpu_path: Path, steps: list[StepResult], t0: float | None) -> list[str]:
    """Mean CPU (% of one core) per process during each step's steady window."""
    if not cpu_path.exists() or t0 is None or not steps:
        return []
    with open(cpu_path, newline="") as handle:
        rows = [(float(r["t"]) - t0, r["process"], float(r["cpu_percent"]))
                for r in csv.DictReader(handle)]
    names = sorted({name for _, name, _ in rows}, key=lambda n: (n.startswith("machine"), n))
    if not names:
        return []
    out = ["| step | " + " | ".join(names) + " |", "|" + "---:|" * (len(names) + 1)]
    for sr in steps:
        cells = [str(sr.step.index)]
        for name in names:
            values = [v for t, n, v in rows if n == name and sr.step.start <= t < sr.step.end]
            cells.append(f"{sum(values) / len(values):.0f}" if values else "–")
        out.append("| " + " | ".join(cells) + " |")
    return out


def judged_step(steps: list[StepResult], max_failure_ratio: float = 0.01) -> StepResult:
    """The highest step the deployment still served (failures within bounds): targets are
    judged there. Past the knee everything times out and says nothing more."""
    served = [sr for sr in steps if sr.failure_ratio <= max_failure_ratio
              and any(s.count for s in sr.stats)]
    return served[-1] if served else steps[0]


def step_rows(steps: list[StepResult]) -> list[str]:
    head = ["step", "users", "HTTP req/s", "socket events/s", "failed %"]
    head += [label for label, _ in STEP_COLUMNS] + ["writes p99 (worst)", "targets"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for sr in steps:
        http = [s for s in sr.stats if s.type != "socketio"]
        sock = [s for s in sr.stats if s.type == "socketio"]
        total = sum(s.count for s in sr.stats)
        failed = sum(s.failures for s in sr.stats)
        cells = [str(sr.step.index), str(sr.step.users), f"{sum(s.rps for s in http):.0f}",
                 f"{sum(s.rps for s in sock):.0f}",
                 f"{100 * failed / total:.1f}" if total else "–"]
        keyed = {s.key: s for s in sr.stats}
        for _label, key in STEP_COLUMNS:
            cells.append(f"{keyed[key].p99:.1f}" if key in keyed else "–")
        writes = next((r for r in sr.results if r.target.name.lower().startswith("writes")), None)
        cells.append(_fmt(writes.value) if writes else "–")
        judged = [r for r in sr.results if r.passed is not None]
        cells.append(f"{sum(1 for r in judged if r.passed)}/{len(judged)}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def write_report(results_dir: Path, *, stats: list[EndpointStats], results: list[Result],
                 pool: list[PoolSample], baselines: dict, run_info: dict,
                 plots: list[str], steps: list[StepResult] | None = None,
                 cpu: list[str] | None = None) -> Path:
    lines = ["# Pulse load test report", ""]
    if run_info:
        lines += ["## Run", ""]
        lines += [f"- **{k}**: {v}" for k, v in run_info.items()]
        lines.append("")
    passed = sum(1 for r in results if r.passed)
    failed = sum(1 for r in results if r.passed is False)
    lines += ["## Targets", ""]
    if steps:
        top = judged_step(steps).step
        lines += [f"Judged on the steady state of step {top.index} ({top.users} users, "
                  f"{top.start:.0f}–{top.end:.0f} s after start): the highest step with at most "
                  "1 % failed requests. Exact percentiles from the raw samples.", ""]
        sustained = [sr for sr in steps if sr.all_passed]
        lines += ["Highest step meeting every target with data: " + (
            f"step {sustained[-1].step.index} ({sustained[-1].step.users} users)."
            if sustained else "none."), ""]
    else:
        lines += ["Judged on locust's whole-run statistics.", ""]
    lines += [f"{passed} passed, {failed} failed, {len(results) - passed - failed} without data.",
              ""]
    lines += result_rows(results) + [""]
    measured = [r for r in results if r.target.metric == "measured"]
    if measured:
        lines += ["## Measured outside locust (capacity, fan-out)", "",
                  "| target | limit | measured | verdict | note |", "|---|---|---|---|---|"]
        open_files = run_info.get("open files limit")
        for r in measured:
            sign = "≥" if r.target.at_least else "≤"
            verdict = {True: "PASS", False: "**FAIL**", None: "n/a"}[r.passed]
            note = ""
            if r.passed is False and r.target.at_least and "connections" in r.target.name and open_files \
                    and r.target.limit > float(open_files) - FILES_BESIDES_SOCKETS:
                # Every socket is a file: the limit itself rules the target out on this machine.
                note = (f"cannot be reached here: a process may hold {open_files} files (hard limit, "
                        f"not raisable in this container), and the server also needs its listener, "
                        f"store connections and log files")
            lines.append(f"| {r.target.name} | {sign} {r.target.limit:g} | {_fmt(r.value)} "
                         f"| {verdict} | {note} |")
        lines.append("")
    if steps:
        lines += ["## Load steps (steady state)", "",
                  "Each step's first seconds (users spawning, sockets connecting) are left out; "
                  "latencies in ms.", ""]
        lines += step_rows(steps) + [""]
        if cpu:
            lines += ["CPU per process (% of one core; the machine column is % of all cores), "
                      "mean over each step's steady window:", ""] + cpu + [""]
    lines += ["## Endpoints (whole run)", "", "Response times in ms, from locust's CSV (whole "
              "run, ramp-ups included); socket rows are end-to-end delivery or ack times.", ""]
    lines += stats_rows(stats) + [""]
    total = sum(s.count for s in stats)
    duration = run_info.get("locust_seconds")
    if total and duration:
        lines += [f"Total {total} requests/deliveries in {duration} s "
                  f"({total / float(duration):.0f}/s on average).", ""]
    if pool:
        lines += ["## PostgreSQL pool", "",
                  "During the load test. Max in use is the instance's own peak (every acquisition "
                  "counts, not only the samples); waits are acquisitions that found every "
                  "connection busy.", "",
                  "| instance | size | max in use | mean in use (sampled) | waits for a busy pool |",
                  "|---|---:|---:|---:|---:|"]
        for instance in sorted({p.instance for p in pool}):
            mine = sorted((p for p in pool if p.instance == instance), key=lambda p: p.t)
            lines.append(f"| {instance} | {max(p.size for p in mine):.0f} "
                         f"| {max(p.most_in_use for p in mine[1:] or mine):.0f} "
                         f"| {sum(p.in_use for p in mine) / len(mine):.1f} "
                         f"| {mine[-1].exhausted - mine[0].exhausted:.0f} |")
        lines.append("")
    if baselines:
        lines += ["## Baselines and capacity (same machine, same run)", ""]
        lines += [f"- **{k}**: `{json.dumps(v)}`" for k, v in baselines.items()]
        lines.append("")
    from loadtest.saturation.report import section_from  # it imports this module's helpers

    lines += section_from(results_dir)
    total, self_time, ours = profile_summary(results_dir / PROFILE_RAW)
    if total:
        lines += ["## Profile of pulse-a under the highest step (py-spy)", "",
                  f"{total} samples; raw stacks in `{PROFILE_RAW}`.", "",
                  "| self time | frame |", "|---:|---|"]
        lines += [f"| {100 * n / total:.1f} % | `{frame}` |" for frame, n in self_time]
        lines += ["", "| inclusive | our code |", "|---:|---|"]
        lines += [f"| {100 * n / total:.1f} % | `{frame}` |" for frame, n in ours]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = results_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def draw_plots(results_dir: Path, pool: list[PoolSample]) -> list[str]:
    """latency.png, throughput.png (and pool.png) from locust's full history CSV."""
    history = results_dir / HISTORY_CSV
    if not history.exists():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float, float, float]]] = {}
    aggregated: list[tuple[float, float, float, float]] = []
    with open(history, newline="") as handle:
        for row in csv.DictReader(handle):
            t = float(row["Timestamp"])
            key = f"{row['Type']} {row['Name']}".strip()
            if row["Name"] == "Aggregated":
                aggregated.append((t, _num(row["User Count"]), _num(row["Requests/s"]),
                                   _num(row["Failures/s"])))
            else:
                series.setdefault(key, []).append((t, _num(row["50%"]), _num(row["95%"]),
                                                   _num(row["99%"])))
    if not aggregated:
        return []
    t0 = aggregated[0][0]
    out = []

    busiest = sorted(series, key=lambda k: -len(series[k]))
    wanted = [k for k in busiest if k.startswith("socketio") and not k.endswith("connect")][:3]
    wanted += [k for k in ("GET /api/v1/feed", "GET /api/v1/users/{id}", "POST /api/v1/posts",
                           "PUT /api/v1/posts/{id}/like") if k in series]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for key in wanted:
        points = [p for p in series[key] if not math.isnan(p[3])]
        ax.plot([p[0] - t0 for p in points], [p[3] for p in points], label=f"{key} p99")
    ax.set_xlabel("seconds")
    ax.set_ylabel("ms (p99, 10 s window)")
    ax.set_yscale("log")
    out.append(_save_plot(plt, fig, ax, "Latency over time", results_dir / "latency.png"))

    fig, ax = plt.subplots(figsize=(11, 4.5))
    ts = [a[0] - t0 for a in aggregated]
    ax.plot(ts, [a[2] for a in aggregated], label="requests+deliveries/s")
    ax.plot(ts, [a[3] for a in aggregated], label="failures/s", color="red")
    ax2 = ax.twinx()
    ax2.plot(ts, [a[1] for a in aggregated], label="users", color="grey", linestyle="--")
    ax2.set_ylabel("users")
    ax.set_xlabel("seconds")
    ax.set_ylabel("per second")
    out.append(_save_plot(plt, fig, ax, "Throughput over time", results_dir / "throughput.png",
                          legend_loc="upper left"))

    if pool:
        fig, ax = plt.subplots(figsize=(11, 3.5))
        p0 = min(p.t for p in pool)
        for instance in sorted({p.instance for p in pool}):
            mine = [p for p in pool if p.instance == instance]
            ax.plot([p.t - p0 for p in mine], [p.in_use for p in mine], label=f"{instance} in use")
            ax.plot([p.t - p0 for p in mine], [p.size for p in mine], linestyle=":",
                    label=f"{instance} size")
        ax.set_xlabel("seconds")
        ax.set_ylabel("connections")
        out.append(_save_plot(plt, fig, ax, "PostgreSQL pool", results_dir / "pg_pool.png"))
    return out


def _save_plot(plt, fig, ax, title: str, path: Path, *, legend_loc: str = "best") -> str:
    """Grid, legend and title as on every plot of the report; writes ``path``, returns its name."""
    ax.grid(True, alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def build(results_dir: Path, targets_path: Path = DEFAULT_TARGETS,
          run_info: dict | None = None, plots: bool = True) -> tuple[Path, list[Result]]:
    stats = read_stats(results_dir / STATS_CSV)
    pool = read_pool_samples(results_dir / POOL_CSV)
    mongo = read_mongo_samples(results_dir / MONGO_CSV)
    baselines_file = results_dir / BASELINES_JSON
    baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else {}
    run_file = results_dir / RUN_JSON
    info = json.loads(run_file.read_text()) if run_file.exists() else {}
    info.update(run_info or {})
    targets = load_targets(targets_path)
    samples = read_samples(results_dir / SAMPLES_CSV)
    plan = info.get("step_plan")
    steps: list[StepResult] = []
    start_file = results_dir / (SAMPLES_CSV + ".start")
    if plan and start_file.exists():
        plan.setdefault("t0", float(start_file.read_text()))
    if samples and plan:
        windows = steady_windows(plan["users"], plan["step_seconds"], plan["settle_seconds"])
        steps = evaluate_steps(targets, samples, windows, pool, baselines, plan.get("t0"), mongo)
    if steps:
        # Capacity figures are not per step: take them from the whole run.
        results = [r for r in judged_step(steps).results if r.target.metric != "measured"] + [
            r for r in evaluate(targets, stats, pool, baselines) if r.target.metric == "measured"]
    else:
        results = evaluate(targets, stats, pool, baselines, mongo)
    (results_dir / "targets.csv").write_text("\n".join(
        ["target,origin,metric,limit,value,passed"] +
        [f'"{r.target.name}",{r.target.origin},{r.target.metric},{r.target.limit},'
         f'{"" if r.value is None else round(r.value, 4)},{r.passed}' for r in results]) + "\n")
    drawn = draw_plots(results_dir, pool) if plots else []
    return write_report(results_dir, stats=stats, results=results, pool=pool,
                        baselines=baselines, run_info={k: v for k, v in info.items()
                                                       if k != "step_plan"},
                        plots=drawn, steps=steps,
                        cpu=cpu_rows(results_dir / CPU_CSV, steps, (plan or {}).get("t0"))), results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.report")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--targets", default=str(DEFAULT_TARGETS))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    path, results = build(Path(args.results), Path(args.targets), plots=not args.no_plots)
    print(path)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL' if r.passed is False else 'n/a '}  "
              f"{r.target.name}: {_fmt(r.value)} ({r.detail})")


if __name__ == "__main__":
    main()
