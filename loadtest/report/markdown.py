"""report.md: the run, the verdicts, the load steps, endpoints, pool, baselines, profile
and plots, as Markdown tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

from loadtest.report.files import PROFILE_RAW, read_cpu_samples
from loadtest.report.profile import profile_summary
from loadtest.report.records import EndpointStats, PoolSample
from loadtest.report.verdicts import Result, StepResult, judged_step

# Files an instance holds besides client sockets (listener, store pools, logs, epoll, ...).
FILES_BESIDES_SOCKETS = 100


def format_value(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:.1f}{unit}"


MS_METRICS = ("avg", "p50", "p95", "p99", "max", "mongo_avg", "replication_lag_p99")


def _limit_and_value(r: Result) -> tuple[str, str]:
    t = r.target
    unit = " ms" if t.metric in MS_METRICS else "" if t.metric == "measured" else "ratio"
    sign = (">" if t.strict else "≥") if t.at_least else ("<" if t.strict else "≤")
    return f"{sign} {format_value(t.limit, unit)}", format_value(r.value, unit)


VERDICTS = {True: "PASS", False: "**FAIL**", None: "n/a"}


def result_rows(results: list[Result]) -> list[str]:
    # Figures measured outside locust are listed once, under their own heading.
    results = [r for r in results if r.target.metric != "measured"]
    rows = ["| target | origin | metric | limit | measured | verdict | note |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.target
        limit, value = _limit_and_value(r)
        rows.append(f"| {t.name} | {t.origin} | {t.metric} | {limit} | {value} "
                    f"| {VERDICTS[r.passed]} | {r.detail} |")
    return rows


def seed_rows(results: list[Result]) -> list[str]:
    """The design note's own figures (origin "seed"), together: what the seed promised."""
    seed = [r for r in results if r.target.origin == "seed"]
    if not seed:
        return []
    rows = ["## The seed's table", "", "The figures the design note promises, measured in this run.", "",
            "| figure | target | measured | verdict | how |", "|---|---|---|---|---|"]
    for r in seed:
        limit, value = _limit_and_value(r)
        rows.append(f"| {r.target.name} | {limit} | {value} | {VERDICTS[r.passed]} | {r.detail} |")
    return rows + [""]


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
    if t0 is None or not steps:
        return []
    rows = [(t - t0, process, percent) for t, process, percent in read_cpu_samples(cpu_path)]
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
        cells.append(format_value(writes.value) if writes else "–")
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
    lines += seed_rows(results)
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
            lines.append(f"| {r.target.name} | {sign} {r.target.limit:g} | {format_value(r.value)} "
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
    # Here, not at the top: loadtest.saturation imports loadtest.report (exact_percentile).
    from loadtest.saturation.report import section_from

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
