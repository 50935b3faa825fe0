"""Closed-loop maximum with wrk (Debian's package; ``scripts/ensure-wrk.sh`` installs it).

One wrk process loads one or several instances: its threads are spread over the ports
(``wrk_report.lua``), so the latencies of both instances are in one histogram. Without
wrk the closed loop of :mod:`loadtest.openloop` stands in, and the result says so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import openloop
from loadtest.saturation.stats import latency_summary

SCRIPT = Path(__file__).with_name("wrk_report.lua")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def parse_wrk(stdout: str) -> dict:
    """wrk's output with ``wrk_report.lua`` → the same figures as ``latency_summary``."""
    match = re.search(r"^WRKJSON (\{.*\})\s*$", stdout, re.M)
    if not match:
        raise ValueError(f"no WRKJSON line in wrk's output: {stdout[-500:]!r}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", stdout)
    errors = {k: v for k, v in raw["errors"].items() if v}
    if non_2xx:
        errors["non-2xx"] = int(non_2xx.group(1))
    errors.pop("status", None)  # >399 answers, a subset of non-2xx
    latency = raw["latency_us"]
    return {"tool": "wrk", "answered": raw["requests"], "seconds": round(seconds, 3),
            "per_second": round(raw["requests"] / seconds, 1) if seconds else None,
            "errors": sum(errors.values()), "error_kinds": errors,
            "mean_ms": round(latency["mean"] / 1000, 3),
            **{f"{k}_ms": round(latency[k] / 1000, 3) for k in ("p50", "p90", "p99", "p99.9")},
            "max_ms": round(latency["max"] / 1000, 3)}


def closed_loop(urls: list[str], *, method: str = "GET", headers: dict[str, str] | None = None,
                body: str = "", seconds: float = 5, connections: int = 32, threads: int = 2,
                timeout: float = 5) -> dict:
    """Maximum req/s at ``connections`` over all ``urls`` (same path, one port each).

    ``cpu_seconds`` in the result is the load tool's own CPU."""
    headers = dict(headers or {})
    wrk = wrk_path()
    if wrk is None:
        requests = [openloop.Request.build(u, method, {**headers, **(
            {"Content-Type": "application/json"} if body else {})}, body.encode()) for u in urls]
        tally = openloop.run(requests, mode="closed", seconds=seconds, connections=connections,
                             timeout=timeout)
        return {"tool": "python closed loop (wrk not installed)", **latency_summary(tally),
                "connections": connections, "cpu_seconds": round(tally.cpu_seconds, 3)}
    ports = ",".join(str(urlsplit(u).port) for u in urls)
    # wrk takes whole seconds.
    argv = [wrk, f"-t{max(threads, len(urls))}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout:g}s", "-s", str(SCRIPT)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(urls[0])
    env = {**os.environ, "PULSE_WRK_PORTS": ports, "PULSE_WRK_METHOD": method,
           "PULSE_WRK_BODY": body}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    # wait4 gives the child's own CPU time.
    stdout = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {stdout[-1000:]}")
    result = parse_wrk(stdout)
    result.update(connections=connections, threads=max(threads, len(urls)),
                  cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3))
    result["client_cpu_percent"] = round(100 * result["cpu_seconds"] / result["seconds"], 1)
    return result
