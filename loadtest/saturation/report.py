"""The saturation results (``saturation.json``) as a Markdown section of the bench report."""
from __future__ import annotations

import json
from pathlib import Path

from loadtest.saturation.run import RESULT_JSON


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _busy(cpu: dict) -> str:
    """Machine busy %, and in brackets the part of it this measurement's processes used."""
    share = cpu.get("measured_percent_of_machine")
    return _f(cpu.get("machine_percent"), 0) + (f" ({_f(share, 0)})" if share is not None else "")


def _rest_row(m: dict, ratio: str, cpu_ratio: str) -> str:
    c, o = m["closed"], m["open"]
    cu, ou = c["cpu"]["us_per_request"], o["cpu"]["us_per_request"]
    client = "" if o.get("client_kept_up", True) else f" (client: {o.get('client_note')})"
    return (f"| {m['route']} | {m['instances']} | {_f(c['per_second'], 0)} | {ratio} "
            f"| {_f(c['p50_ms'], 2)} / {_f(c['p99_ms'], 2)} | {c['errors']} "
            f"| {_f(o['rate'], 0)} | {_f(o['p50_ms'], 2)} / {_f(o['p99_ms'], 2)} / {_f(o.get('p99.9_ms'), 2)} "
            f"| {o['errors']}{client} | {_f(cu.get('servers'))} | {cpu_ratio} | {_f(cu.get('stores'))} "
            f"| {_f(ou.get('servers'))} | {_busy(c['cpu'])} / {_busy(o['cpu'])} "
            f"| {_f(c.get('client_cpu_percent'), 0)} / {_f(o.get('client_cpu_percent'), 0)} |")


def rest_rows(rest: dict) -> list[str]:
    lines = [
        f"Closed loop: {rest['tool_closed']}, {rest['connections']} connections, "
        f"{rest['closed_seconds']:g} s per run (both instances: one wrk thread per instance, one "
        f"latency histogram). Open loop: {rest['tool_open']}, a fixed rate of "
        f"{100 * rest['open_fraction']:.0f} % of that maximum for {rest['open_seconds']:g} s over "
        f"{rest['open_connections']} connections, latency from each request's due time "
        "(coordinated omission corrected). CPU per request: process CPU time of the server "
        "processes (both Pulse instances, whichever serves) and of the stores (this run's "
        "PostgreSQL backends, SecantusDB, the Redis and RabbitMQ servers — those two are "
        "shared with anything else on the machine) over the run, divided by the requests "
        "answered; × bare µs is that against bare aiohttp's (the steadier figure on a busy "
        "machine: it does not depend on the share of the cores the run got). Machine %: all cores busy, in brackets the share used by the processes "
        "measured and the load tool; the difference is other work on the machine.", "",
        "| route | instances | max req/s | × bare | p50 / p99 ms at max | errors | open-loop req/s "
        "| p50 / p99 / p99.9 ms | errors | servers µs/req (max) | × bare µs | stores µs/req (max) "
        "| servers µs/req (open) | machine % max / open (this run's processes) "
        "| load tool % of a core max / open |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if rest.get("bare"):
        lines.append(_rest_row(rest["bare"], "1.00", "1.00"))
    for runs in rest.get("routes", {}).values():
        for m in runs.values():
            lines.append(_rest_row(m, _f(m.get("ratio_to_bare"), 3), _f(m.get("cpu_ratio_to_bare"), 1)))
    return lines


def chat_rows(name: str, result: dict, pulse: bool) -> list[str]:
    errors = result.get("connect_errors") or {}
    failed = sum(errors.values()) if isinstance(errors, dict) else errors
    kinds = f": {', '.join(f'{k} ×{n}' for k, n in errors.items())}" if failed and isinstance(errors, dict) else ""
    lines = [f"**{name}**: {result.get('connected')} sockets ({failed} failed to "
             f"connect{kinds}); sustained maximum **{_f(result.get('max_sustained_per_second'), 0)} "
             f"deliveries/s** ({result.get('sustained_means')}).", "",
             "| offered deliveries/s | delivered / expected | p50 / p99 ms | acked (failed, unanswered) | ack p99 ms "
             "| machine % (this run's) | servers µs/delivery | stores µs/delivery | servers µs/message "
             + ("| MongoDB commands/message " if pulse else "") + "| clients % of a core | verdict |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if pulse else "") + "---:|---|"]
    for s in result.get("steps", []):
        verdict = "keeps up" if s.get("keeps_up") else ("**lags**" if s.get("lags") else "late")
        lines.append(
            f"| {_f(s['offered_per_second'], 0)} | {s['delivered']:,} / {s['expected']:,} "
            f"| {_f(s['p50_ms'], 1)} / {_f(s['p99_ms'], 1)} | {s['acked']:,} ({s['ack_errors']}, {s.get('unacked', 0)}) "
            f"| {_f(s.get('ack_p99_ms'), 1)} | {_busy({'machine_percent': s.get('machine_cpu_percent'), 'measured_percent_of_machine': s.get('measured_percent_of_machine')})} "
            f"| {_f(s.get('server_cpu_us_per_delivery'))} | {_f(s.get('stores_cpu_us_per_delivery'))} "
            f"| {_f(s.get('server_cpu_us_per_message'), 0)} "
            + (f"| {_f(s.get('mongo_commands_per_message'), 2)} " if pulse else "")
            + f"| {_f(s.get('client_cpu_percent'), 0)} | {verdict} |")
    return lines


def section(result: dict) -> list[str]:
    lines = ["## Saturation (closed-loop maximum, open-loop p99, stepped chat)", "",
             f"{result.get('date')}, {result.get('cpus')} CPUs; load average (1/5/15 min) before "
             f"{result.get('load_average_before')}, after {result.get('load_average_after')} — "
             "the load tools, both instances and the stores share these cores; "
             f"{result.get('seconds')} s of measurements.", ""]
    if result.get("rest"):
        lines += ["### REST", ""] + rest_rows(result["rest"]) + [""]
    chat = result.get("chat")
    if chat:
        shape = (chat.get("pulse") or chat.get("bare") or {}).get("shape", {})
        lines += ["### Chat, stepped until delivery lags", "",
                  f"{shape.get('users')} users in groups of {shape.get('group_size')}, members "
                  f"alternating between {shape.get('servers')} servers; each message a "
                  "`message:send` over a socket (senders take turns), acked, received as "
                  "`message:new` by every member (the sender included); messages on a fixed "
                  "timetable, latency from each message's due time. Steps of "
                  f"{(chat.get('pulse') or chat.get('bare') or {}).get('step_seconds')} s plus "
                  f"{(chat.get('pulse') or chat.get('bare') or {}).get('drain_seconds')} s drain.", ""]
        if chat.get("bare"):
            lines += chat_rows("bare python-socketio + AsyncRedisManager (stores nothing)",
                               chat["bare"], False) + [""]
        if chat.get("pulse"):
            lines += chat_rows("Pulse, `message:send` → MongoDB → both instances", chat["pulse"],
                               True) + [""]
        lines += [f"Pulse's sustained maximum: {_f(chat.get('sustained_ratio_to_bare'), 3)} × bare "
                  "python-socketio's.", ""]
    return lines


def section_from(results_dir: Path) -> list[str]:
    """The section for ``results_dir/saturation.json``, or nothing when there is none."""
    path = results_dir / RESULT_JSON
    if not path.exists():
        return []
    return section(json.loads(path.read_text()))


def write_markdown(result: dict, results_dir: Path) -> Path:
    path = results_dir / "saturation.md"
    path.write_text("\n".join(section(result)) + "\n")
    return path
