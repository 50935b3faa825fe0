"""The browser-facing root paths: the console's files, /docs with a local Swagger UI,
and that nothing is loaded from another origin."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]


async def get(api, path: str):
    async with api.session.get(api.base_url + path) as resp:
        return resp.status, resp.headers, await resp.read()


def local_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


async def test_console_page_is_served_at_root_with_the_contract_labels(api):
    status, headers, body = await get(api, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = body.decode()
    for label in ("Email", "Username", "Password", "Login", "Members", "Message"):
        assert re.search(rf"<label for=\"[\w-]+\">{label}</label>", html), label
    for button in ("Sign up", "Go to sign in", "New conversation", "Start", "Send"):
        assert re.search(rf"<button type=\"(submit|button)\"[^>]*>{button}</button>", html), button
    assert re.search(r"<button[^>]*>Notifications <span", html)
    # Sign-in shares the form: the script renames the button and shows `Login`.
    _, _, script = await get(api, "/console/app.js")
    assert b'"Sign in"' in script and b'"Go to sign up"' in script
    # Same-origin only: a policy that forbids other origins, and no absolute asset URL.
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert all(url.startswith(("/", "#")) for url in local_assets(html)), local_assets(html)


@pytest.mark.parametrize("name, ctype", [("app.js", "javascript"), ("sio.js", "javascript"),
                                         ("style.css", "text/css"), ("docs.js", "javascript")])
async def test_console_static_files_are_served(api, name, ctype):
    status, headers, body = await get(api, f"/console/{name}")
    assert status == 200 and ctype in headers["Content-Type"]
    assert body == (ROOT / "api" / "console" / name).read_bytes()
    assert b"http://" not in body and b"https://" not in body  # no CDN, no other origin


async def test_console_static_paths_cannot_escape_the_folder(api):
    for path in ("/console/../web.py", "/console/%2e%2e/web.py", "/console/..%2fweb.py"):
        status, _, body = await get(api, path)
        assert status in (403, 404), path
        assert b"add_web_routes" not in body


async def test_docs_serve_swagger_ui_from_the_package(api):
    status, headers, body = await get(api, "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assets = local_assets(body.decode())
    assert "/docs/static/swagger-ui-bundle.js" in assets and "/docs/static/swagger-ui.css" in assets
    for url in assets:
        assert url.startswith("/"), url
        status, _, content = await get(api, url)
        assert status == 200 and content, url
    _, _, init = await get(api, "/console/docs.js")
    assert b'url: "/openapi.json"' in init


async def test_asyncapi_document_is_served(api):
    status, headers, body = await get(api, "/asyncapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert b'"asyncapi":"3.0.0"' in body


async def test_web_routes_are_labelled_by_route_in_metrics(api):
    await get(api, "/")
    await get(api, "/console/app.js")
    _, _, metrics = await get(api, "/metrics")
    text = metrics.decode()
    assert 'route="web.console"' in text and 'route="web.console_static"' in text
    assert "app.js" not in text  # one series for all static files, not one per path


async def test_console_files_are_package_data():
    """A non-editable install (the container image) has the console's files."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api"]
    files = [p.relative_to(ROOT / "api").as_posix() for p in (ROOT / "api" / "console").iterdir()]
    assert {"console/index.html", "console/app.js", "console/sio.js"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
