"""The saturation section of the bench report, from a recorded run (data/saturation.json)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from loadtest.saturation.report import section, section_from, write_markdown
from loadtest.saturation.run import RESULT_JSON

DATA = Path(__file__).with_name("data")


def _run() -> dict:
    return json.loads((DATA / "saturation.json").read_text())


def _table(lines: list[str], header_start: str) -> list[list[str]]:
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_rest_table_has_the_baseline_then_every_route_and_instance_count():
    run = _run()
    lines = section(run)
    rows = _table(lines, "| route |")
    expected = [("bare aiohttp GET /json", "1")] + [
        (m["route"], str(m["instances"])) for runs in run["rest"]["routes"].values() for m in runs.values()]
    assert [(r[0], r[1]) for r in rows] == expected
    bare, profile = rows[0], rows[1]
    assert bare[3] == "1.00"
    assert profile[2] == f"{run['rest']['routes']['cached_profile']['1']['closed']['per_second']:,.0f}"
    assert profile[3] == f"{run['rest']['routes']['cached_profile']['1']['ratio_to_bare']:,.3f}"


def test_chat_tables_have_one_row_per_step_with_a_verdict():
    run = _run()
    lines = section(run)
    tables = [i for i, line in enumerate(lines) if line.startswith("| offered deliveries/s")]
    assert len(tables) == 2
    for start, side in zip(tables, ("bare", "pulse")):
        rows = _table(lines[start:], "| offered deliveries/s")
        steps = run["chat"][side]["steps"]
        assert len(rows) == len(steps)
        for row, step in zip(rows, steps):
            assert row[1] == f"{step['delivered']:,} / {step['expected']:,}"
            assert row[-1] == ("keeps up" if step["keeps_up"] else "**lags**" if step["lags"] else "late")
    assert any("sustained maximum" in line for line in lines)


def test_section_from_a_results_directory(tmp_path):
    assert section_from(tmp_path) == []  # no saturation run: no section
    shutil.copy(DATA / "saturation.json", tmp_path / RESULT_JSON)
    assert section_from(tmp_path) == section(_run())
    path = write_markdown(_run(), tmp_path)
    assert path.read_text().startswith("## Saturation")
