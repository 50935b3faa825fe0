"""Behind compose's nginx, the console and its documents reach Pulse: `/` and every path
the console loads fall to the catch-all `location /` that proxies to the api replicas
(nothing else matches them), and the console's Socket.IO goes through the WebSocket
location."""
from __future__ import annotations

import re
from pathlib import Path

CONF = (Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf").read_text()
CONSOLE_PATHS = ["/", "/console/app.js", "/console/sio.js", "/docs", "/docs/static/swagger-ui-bundle.js",
                 "/asyncapi.json", "/openapi.json", "/api/v1/auth/register"]


def locations() -> list[tuple[str, str, str]]:
    """(modifier, path, body) of each location block."""
    return re.findall(r"location\s+(=|\^~|~\*?)?\s*(\S+)\s*\{([^}]*)\}", CONF)


def handling(path: str) -> tuple[str, str, str]:
    """The location nginx picks for ``path`` (exact, then longest prefix; no regex locations here)."""
    blocks = locations()
    assert not [b for b in blocks if b[0].startswith("~")], "regex locations: extend this helper"
    for block in blocks:
        if block[0] == "=" and block[1] == path:
            return block
    prefixes = [b for b in blocks if b[0] != "=" and path.startswith(b[1])]
    return max(prefixes, key=lambda b: len(b[1]))


def test_console_paths_are_proxied_to_pulse():
    for path in CONSOLE_PATHS:
        modifier, location, body = handling(path)
        assert location == "/" and "proxy_pass http://pulse_api;" in body, (path, location)


def test_the_console_socket_goes_through_the_websocket_location():
    _, location, body = handling("/socket.io/")
    assert location == "/socket.io/" and "proxy_pass http://pulse_api;" in body
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", CONF)
