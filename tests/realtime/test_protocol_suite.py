"""The reference Engine.IO v4 / Socket.IO v5 protocol test suite (socketio/socket.io-protocol,
folder test-suite/, mocha), run against a Pulse instance configured as it asks (ping
300/200 ms, maxPayload 1000000, connect timeout 1 s).

Run: the tests that do not need the suite's echo app: the whole Engine.IO section, and of
the Socket.IO section unknown namespace, invalid handshake, no handshake, namespace
disconnect and the three invalid packet formats (23 tests). Pulse requires a token in
the CONNECT packet: a harness of ours (written here, at run time) stands in for the
suite's node-imports.js, adds the token to the suite's main-namespace CONNECT and points
its fixed localhost:3000 at the instance.

The suite itself is not published on npm, and a copy of its code does not belong in this
repository: its test-suite.js (commit ``SUITE_COMMIT``, checked against ``SUITE_SHA256``)
is looked for at ``$PULSE_PROTOCOL_SUITE`` or ``<cache>/suite/<commit>/test-suite.js``
(cache: ``$PULSE_PROTOCOL_SUITE_CACHE``, default ~/.cache/pulse-protocol-suite). The npm
packages it imports are pinned in tests/data/protocol-suite (package.json and
package-lock.json, the versions of the suite's own lock file) and installed from the
registry with ``npm ci`` into ``<cache>/npm/<hash of the lock file>/``, once. Without node
and npm, or without the suite file, the test says so and skips.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUITE_COMMIT = "4f633dd6a4445492d57af3b27ddd2d336014f1f1"
SUITE_SHA256 = "9fc4abce7be55bcd8741a2c62d242f3eb85560d2b669c15f2fdd8abea9a0c30d"
# package.json and package-lock.json of the npm packages the suite imports.
NPM_MANIFEST = Path(__file__).resolve().parents[1] / "data" / "protocol-suite"
# As the suite's server is configured.
SUITE_SETTINGS = dict(socket_ping_interval_ms=300, socket_ping_timeout_ms=200,
                      socket_max_payload_bytes=1_000_000, socket_connect_timeout_ms=1000)

APP_INDEPENDENT = (
    r"^Engine\.IO protocol "
    r"|^Socket\.IO protocol connect should (disallow connection to an unknown namespace"
    r"|disallow connection with an invalid handshake|close the connection if no handshake is received)$"
    r"|^Socket\.IO protocol disconnect should disconnect from the main namespace$"
    r"|^Socket\.IO protocol message should close the connection upon invalid format"
)
EXPECTED_TESTS = 23

# Our stand-in for the suite's node-imports.js (which it imports by that name).
HARNESS = r"""
import nodeFetch from "node-fetch";
import { WebSocket as NodeWebSocket } from "ws";
import chai from "chai";
import chaiString from "chai-string";

chai.use(chaiString);

const target = process.env.PULSE_URL;
const token = process.env.PULSE_TOKEN;
// The suite talks to localhost:3000; the instance listens elsewhere.
const toTarget = (url) =>
  String(url).replace(/^(https?|wss?):\/\/localhost:3000/, (_, scheme) =>
    target.replace(/^http/, scheme.startsWith("ws") ? "ws" : "http"));

class TokenWebSocket extends NodeWebSocket {
  constructor(url, ...rest) {
    super(toTarget(url), ...rest);
    // Once it has sent a Socket.IO CONNECT, the socket answers pings as any Socket.IO
    // client does: the suite's echo app follows its CONNECT with an "auth" event, which
    // Pulse does not send, so the suite's wait for that event takes the first ping, and
    // an unanswered ping would end the session before the suite's next step.
    this.addEventListener("message", (event) => {
      if (this.socketIOConnected && event.data === "2") super.send("3");
    });
  }
  send(data, ...rest) {
    if (typeof data === "string" && data.startsWith("40")) this.socketIOConnected = true;
    // Pulse authenticates in the CONNECT packet: the suite's bare main-namespace CONNECT
    // gets the token.
    if (data === "40") data = "40" + JSON.stringify({ token });
    return super.send(data, ...rest);
  }
}

globalThis.fetch = (url, init) => nodeFetch(toTarget(url), init);
globalThis.WebSocket = TokenWebSocket;
globalThis.chai = chai;
"""


def cache_dir() -> Path:
    return Path(os.environ.get("PULSE_PROTOCOL_SUITE_CACHE") or Path.home() / ".cache" / "pulse-protocol-suite")


def suite_file() -> Path:
    given = os.environ.get("PULSE_PROTOCOL_SUITE")
    if given:
        path = Path(given)
        return path / "test-suite.js" if path.is_dir() else path
    return cache_dir() / "suite" / SUITE_COMMIT / "test-suite.js"


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{args[0]} did not finish within {timeout}s")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def install_npm_packages(npm: str) -> Path:
    """The folder holding node_modules as the committed lock file pins it (installed once
    per lock file; in a folder of its own first, so a run at the same time, or one that was
    interrupted, never leaves a half-installed folder in its place)."""
    lock = (NPM_MANIFEST / "package-lock.json").read_bytes()
    installed = cache_dir() / "npm" / hashlib.sha256(lock).hexdigest()[:16]
    if (installed / "node_modules" / "mocha" / "bin" / "mocha").is_file():
        return installed
    installed.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=installed.name + ".", dir=installed.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NPM_MANIFEST / name, staging / name)
        # --ignore-scripts: none of these packages needs an install script.
        code, out, err = await run(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", cwd=staging)
        assert code == 0, f"npm ci failed: {out[-2000:]} {err[-2000:]}"
        try:
            staging.rename(installed)
        except OSError:  # another run installed it meanwhile
            if not (installed / "node_modules" / "mocha" / "bin" / "mocha").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return installed


async def prepare_run() -> tuple[Path, Path]:
    """The npm packages' folder, and a folder of this run's own inside it (other checkouts'
    runs may share the cache) holding the suite and our harness: node, looking upwards for
    node_modules, finds the packages from there."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the reference protocol suite; not found")
    source = suite_file()
    if not source.is_file():
        pytest.skip(f"the reference protocol suite (socketio/socket.io-protocol test-suite/test-suite.js at "
                    f"{SUITE_COMMIT}) is not at {source}; it is not on npm: put it there (or set "
                    f"PULSE_PROTOCOL_SUITE) to run it")
    suite = source.read_bytes()
    assert hashlib.sha256(suite).hexdigest() == SUITE_SHA256, f"{source} is not the suite at {SUITE_COMMIT}"
    packages = await install_npm_packages(npm)
    folder = Path(tempfile.mkdtemp(prefix="run.", dir=packages))
    (folder / "package.json").write_text(json.dumps({"private": True, "type": "module"}))
    (folder / "node-imports.js").write_text(HARNESS)
    (folder / "test-suite.js").write_bytes(suite)
    return packages, folder


async def test_reference_protocol_suite_passes(start_instance, api):
    packages, folder = await prepare_run()
    try:
        account = await api.register("suite")
        async with start_instance(**SUITE_SETTINGS) as inst:
            env = {**os.environ, "PULSE_URL": inst.url, "PULSE_TOKEN": account.token}
            code, out, err = await run(
                shutil.which("node"), str(packages / "node_modules" / "mocha" / "bin" / "mocha"),
                "--reporter", "json", "--timeout", "10000", "--exit", "--grep", APP_INDEPENDENT, "test-suite.js",
                cwd=folder, env=env,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        report = json.loads(out)
    except ValueError:
        raise AssertionError(f"mocha printed no report (exit {code}): {out[-2000:]} {err[-2000:]}")
    failed = [f'{t["fullTitle"]}: {t.get("err", {}).get("message")}' for t in report["failures"]]
    assert not failed, "\n".join(failed)
    assert report["stats"]["passes"] == EXPECTED_TESTS, [t["fullTitle"] for t in report["passes"]]
    assert code == 0
