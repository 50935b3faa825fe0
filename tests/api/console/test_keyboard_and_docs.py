"""The console with the keyboard alone, and /docs rendering the OpenAPI document in the
browser from the packaged Swagger UI (no request leaves the origin)."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.helpers.console import PASSWORD, connection, expect, unique

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


async def test_sign_up_and_chat_with_the_keyboard_only(people, console_instances, api):
    friend = await api.register("kbfriend")
    page = await people()
    await page.goto(console_instances[0].url + "/")
    username = unique("keys")
    await expect(page.get_by_label("Email")).to_be_focused()  # the form starts focused
    await page.keyboard.type(f"{username}@example.com")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.keyboard.type(username)
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")  # past the optional display name
    await expect(page.get_by_label("Password")).to_be_focused()
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("banner")).to_contain_text(username)
    await expect(connection(page)).to_have_text("Live")

    await page.get_by_role("button", name="Chat", exact=True).focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="New conversation").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Members")).to_be_focused()
    await page.keyboard.type(friend.username)
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Message")).to_be_focused()
    await page.keyboard.type("typed, not clicked")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("log", name="Conversation history")).to_contain_text("typed, not clicked")


async def test_docs_render_the_openapi_document_locally(people, console_instances):
    page = await people()
    origin = console_instances[0].url
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(origin + "/docs")
    await expect(page.get_by_role("heading", name=re.compile("^Pulse API"))).to_be_visible()
    await expect(page.get_by_text("/api/v1/auth/register", exact=True).first).to_be_visible()
    assert requested and all(urlsplit(url).netloc == urlsplit(origin).netloc for url in requested
                             if not url.startswith("data:")), requested
