"""Talking to the app under test over HTTP: a thin client, the accounts it registers, and
the check of a problem+json answer."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    token: str
    user: dict

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def is_problem(status: int, body: Any, resp: aiohttp.ClientResponse, expected: int) -> None:
    """The response is an application/problem+json error with the expected status."""
    assert status == expected, body
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == expected and body["title"] and body["detail"] and body["type"]


ROOT_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/socket.io")


class Api:
    """A thin HTTP client for the app under test."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, app: Any = None) -> None:
        self.session = session
        self.base_url = base_url
        self.app = app  # the aiohttp application served, when the test started it

    def url(self, path: str) -> str:
        if path.startswith(("/api/", *ROOT_PATHS)):
            return self.base_url + path
        return self.base_url + "/api/v1" + path

    async def request(self, method: str, path: str, *, token: str | None = None, json: Any = None,
                      data: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url(path), json=json, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body: Any = raw
            if "json" in ctype and raw:
                body = orjson.loads(raw)
            return resp.status, body, resp

    async def register(self, prefix: str = "u", **fields: Any) -> Account:
        suffix = uuid.uuid4().hex[:8]
        payload = {
            "email": f"{prefix}{suffix}@example.com",
            "username": f"{prefix}{suffix}"[:30],
            "password": "correct horse battery",
            "display_name": f"{prefix.title()} {suffix}",
        }
        payload.update(fields)
        status, body, _ = await self.request("POST", "/auth/register", json=payload)
        assert status == 201, body
        return Account(id=body["user"]["id"], username=payload["username"], email=payload["email"],
                       password=payload["password"], token=body["token"], user=body["user"])
