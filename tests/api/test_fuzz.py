"""Schemathesis against the app's own /openapi.json: no 500s, and every response matches
the status codes, content types and schemas the document declares."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

ST = Path(sys.executable).with_name("st")
CHECKS = os.environ.get("PULSE_FUZZ_CHECKS") or ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")


async def run_schemathesis(base_url: str, token: str, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ST), "run", f"{base_url}/openapi.json", "--url", base_url,
        "-H", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        # Logging out would revoke the token every later request uses.
        "--exclude-operation-id", "auth.logout",
        "--workers", "1", "--seed", "1", "--no-color", "--generation-database", "none",
        *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.skipif(not ST.exists() and not shutil.which("st"), reason="schemathesis is not installed")
async def test_openapi_fuzz_finds_no_server_errors_or_schema_mismatches(start_app):
    async with start_app(rate_limits=False) as api:
        account = await api.register("fz")
        code, out = await run_schemathesis(api.base_url, account.token, "--max-examples",
                                           os.environ.get("PULSE_FUZZ_EXAMPLES", "10"),
                                           "--phases", "examples,coverage,fuzzing")
        status, _, _ = await api.request("GET", "/healthz")
        assert status == 200
    assert code == 0, out[-20000:]
