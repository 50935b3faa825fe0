"""wrk's output (with the bench's Lua report) → figures. The inputs are wrk runs recorded on
this machine against bare aiohttp (``data/wrk-*.txt``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.saturation.wrk import parse_wrk

DATA = Path(__file__).with_name("data")


def test_a_clean_run_gives_rate_latencies_and_no_errors():
    result = parse_wrk((DATA / "wrk-get-200.txt").read_text())
    assert result["tool"] == "wrk"
    assert result["answered"] == 10405
    assert result["seconds"] == pytest.approx(2.043, abs=0.001)
    # The rate is requests over wrk's own duration, as wrk prints it (5091.92).
    assert result["per_second"] == pytest.approx(5091.9, abs=0.1)
    assert (result["p50_ms"], result["p90_ms"], result["p99_ms"], result["p99.9_ms"]) == (5.32, 17.096, 46.584, 82.08)
    assert result["mean_ms"] == pytest.approx(8.04, abs=0.01)  # wrk's "Latency 8.04ms"
    assert result["max_ms"] == 92.977
    assert result["errors"] == 0 and result["error_kinds"] == {}


def test_answers_other_than_2xx_are_errors_counted_once():
    # POST to a GET-only route: every answer a 405, which wrk counts both as "status" (>399)
    # and in its Non-2xx line.
    result = parse_wrk((DATA / "wrk-post-405.txt").read_text())
    assert result["answered"] == 1594
    assert result["errors"] == 1594
    assert result["error_kinds"] == {"non-2xx": 1594}


def test_output_without_the_report_line_is_refused():
    text = (DATA / "wrk-get-200.txt").read_text()
    without = "\n".join(line for line in text.splitlines() if not line.startswith("WRKJSON"))
    with pytest.raises(ValueError, match="no WRKJSON"):
        parse_wrk(without)
