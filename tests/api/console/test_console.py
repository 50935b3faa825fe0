"""The web console in a real browser, driven by accessible names only (get_by_role /
get_by_label), against `pulse serve` processes: sign-up errors, live chat between two
people on two instances, live notifications, social features and events, and catching
up after an instance restarts."""
from __future__ import annotations

import random
import re
import uuid
from datetime import datetime, timedelta

import pytest

from tests.helpers.console import PASSWORD, connection, expect, keep_for_docs, unique

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


def notifications_button(page):
    return page.get_by_role("button", name=re.compile(r"^Notifications"))


async def sign_up(page, url: str, prefix: str) -> str:
    username = unique(prefix)
    await page.goto(url + "/")
    await page.get_by_label("Email").fill(f"{username}@example.com")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up", exact=True).click()
    await expect(page.get_by_role("banner")).to_contain_text(username)
    await expect(connection(page)).to_have_text("Live")
    return username


async def open_chat_with(page, username: str) -> None:
    await page.get_by_role("button", name="Chat", exact=True).click()
    await page.get_by_role("button", name="New conversation").click()
    await page.get_by_label("Members").fill(username)
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.get_by_role("heading", name=username)).to_be_visible()


async def send(page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page.get_by_label("Message")).to_have_value("")


def messages(page):
    return page.get_by_role("log", name="Conversation history")


async def test_sign_up_errors_are_shown_in_words(people, console_instances, api, artifacts):
    page = await people()
    url = console_instances[0].url
    await page.goto(url + "/")
    await page.get_by_label("Email").fill("not-an-email")
    await page.get_by_label("Username").fill("x!")
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Sign up", exact=True).click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Bad Request (400)")
    for field in ("email", "username", "password"):
        await expect(alert).to_contain_text(f"• {field}:")
    await page.screenshot(path=str(artifacts / "console-sign-up-error.png"))

    taken = await api.register("taken")  # a username that exists: 409, said so
    await page.get_by_label("Email").fill(f"{unique('other')}@example.com")
    await page.get_by_label("Username").fill(taken.username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up", exact=True).click()
    await expect(alert).to_contain_text("(409)")
    await expect(page.get_by_role("banner")).not_to_contain_text(taken.username)

    # Signing in with a wrong password is an error in words too; the right one works.
    await page.get_by_role("button", name="Go to sign in").click()
    await page.get_by_label("Login").fill(taken.username)
    await page.get_by_label("Password").fill("wrong password!")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(alert).to_contain_text("(401)")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("banner")).to_contain_text(taken.username)
    await expect(alert).to_be_hidden()


async def test_two_people_on_two_instances_chat_live(people, console_instances, artifacts):
    one, two = console_instances
    alice_page, bob_page = await people(), await people()
    alice = await sign_up(alice_page, one.url, "alice")
    bob = await sign_up(bob_page, two.url, "bob")
    await bob_page.get_by_role("button", name="Chat", exact=True).click()

    await open_chat_with(alice_page, bob)
    await send(alice_page, "Hi Bob, this is Alice!")
    await expect(messages(alice_page)).to_contain_text("Hi Bob, this is Alice!")

    # Bob (on the other instance) sees the new conversation and the message live.
    await bob_page.get_by_role("button", name=re.compile(alice)).click()
    await expect(messages(bob_page)).to_contain_text("Hi Bob, this is Alice!")
    # Bob opening it reads it: Alice sees the receipt; each sees the other online.
    await expect(messages(alice_page)).to_contain_text(f"Seen by {bob}")
    await expect(bob_page.get_by_text(f"{alice} (online)")).to_be_visible()

    # Typing shows on the other side while Bob types, then his message arrives live.
    await bob_page.get_by_label("Message").fill("Hello Alice")
    await expect(alice_page.get_by_text(f"{bob} is typing…")).to_be_visible()
    await bob_page.get_by_role("button", name="Send", exact=True).click()
    await expect(messages(alice_page)).to_contain_text("Hello Alice")
    await expect(alice_page.get_by_text(f"{bob} is typing…")).to_be_hidden()
    await expect(alice_page.get_by_text(f"{bob} (online)")).to_be_visible()

    shot = artifacts / "console-chat.png"
    await alice_page.screenshot(path=str(shot))
    await bob_page.screenshot(path=str(artifacts / "console-chat-other-side.png"))
    keep_for_docs(shot, "console.png")


async def test_a_notification_arrives_live_and_the_unread_count_updates(people, console_instances, api, artifacts):
    page = await people()
    username = await sign_up(page, console_instances[0].url, "notified")
    await expect(notifications_button(page)).to_have_accessible_name("Notifications 1 unread")  # welcome

    fan = await api.register("fan")  # another person, through the REST API of another instance
    status, target, _ = await api.request("GET", f"/users/{username}", token=fan.token)
    assert status == 200
    status, _, _ = await api.request("PUT", f"/users/{target['id']}/follow", token=fan.token)
    assert status == 200
    await expect(notifications_button(page)).to_have_accessible_name("Notifications 2 unread")
    await expect(page.get_by_role("status", name="Latest news")).to_contain_text("started following you")

    await notifications_button(page).click()
    panel = page.get_by_role("region", name="Notifications")
    await expect(panel).to_contain_text("started following you")
    await page.screenshot(path=str(artifacts / "console-notifications.png"))
    await panel.get_by_role("button", name=re.compile("^Mark read: .*started following you")).click()
    await expect(notifications_button(page)).to_have_accessible_name("Notifications 1 unread")
    await panel.get_by_role("button", name="Mark all read").click()
    await expect(notifications_button(page)).to_have_accessible_name("Notifications 0 unread")
    status, body, _ = await api.request("GET", "/notifications/unread-count", token=fan.token)
    assert status == 200  # the fan's own count is untouched by this page's clicks


async def test_posts_likes_comments_follows_and_events(people, console_instances, artifacts):
    one, two = console_instances
    host_page, guest_page = await people(), await people()
    host = await sign_up(host_page, one.url, "host")
    guest = await sign_up(guest_page, two.url, "guest")

    await host_page.get_by_label("What's happening?").fill("Party at mine on Friday")
    await host_page.get_by_role("button", name="Publish").click()
    await expect(host_page.get_by_role("article", name=f"Post by {host}")).to_contain_text("Party at mine")

    # The guest opens the host's profile, follows, and the post reaches their feed.
    await guest_page.get_by_label("Find user").fill(host)
    await guest_page.get_by_role("button", name="Open profile").click()
    await expect(guest_page.get_by_role("heading", name=f"Profile of {host}")).to_be_visible()
    await guest_page.get_by_role("button", name="Follow", exact=True).click()
    await expect(guest_page.get_by_role("button", name="Unfollow")).to_be_visible()
    post = guest_page.get_by_role("article", name=f"Post by {host}")
    await post.get_by_role("button", name="Like (0)").click()
    await expect(post.get_by_role("button", name="Like (1)")).to_have_attribute("aria-pressed", "true")
    await post.get_by_role("button", name="Comments (0)").click()
    await post.get_by_label("Comment").fill("Count me in")
    await post.get_by_role("button", name="Add comment").click()
    await expect(post).to_contain_text(f"{guest}: Count me in")
    for _ in range(20):  # the feed is eventually consistent (2 s)
        await guest_page.get_by_role("button", name="Feed", exact=True).click()
        if await guest_page.get_by_role("article", name=f"Post by {host}").count():
            break
        await guest_page.wait_for_timeout(500)
    await expect(guest_page.get_by_role("article", name=f"Post by {host}")).to_contain_text("Like (1)")
    # The host hears about the follow, the like and the comment live.
    await expect(notifications_button(host_page)).to_have_accessible_name("Notifications 4 unread")

    # Events: create, RSVP, attendees.
    title = f"Friday party {uuid.uuid4().hex[:6]}"
    # A minute of its own in the future, so the list from then starts with this event.
    starts = (datetime(2031, 1, 1, 20, 0) + timedelta(minutes=random.randrange(500_000))).strftime("%Y-%m-%dT%H:%M")
    await host_page.get_by_role("button", name="Events", exact=True).click()
    await host_page.get_by_label("Title").fill(title)
    await host_page.get_by_label("Starts at").fill(starts)
    await host_page.get_by_label("Location").fill("Rooftop")
    await host_page.get_by_label("Capacity").fill("10")
    await host_page.get_by_role("button", name="Create event").click()
    await expect(host_page.get_by_role("article", name=f"Event: {title}")).to_contain_text("hosted by " + host)

    await guest_page.get_by_role("button", name="Events", exact=True).click()
    await guest_page.get_by_label("Show events from").fill(starts)
    await guest_page.get_by_role("button", name="Show", exact=True).click()
    event = guest_page.get_by_role("article", name=f"Event: {title}")
    await event.get_by_role("group", name=f"RSVP to {title}").get_by_role("button", name="Going", exact=True).click()
    event = guest_page.get_by_role("article", name=f"Event: {title}")
    await expect(event.get_by_role("button", name="Going", exact=True)).to_have_attribute("aria-pressed", "true")
    await event.get_by_role("button", name=re.compile(r"^Attendees \(1 going\)")).click()
    await expect(event.get_by_role("listitem")).to_have_text(f"{guest} — Going")
    await guest_page.screenshot(path=str(artifacts / "console-events.png"))


async def test_after_an_instance_restarts_the_open_page_catches_up(people, serve_process, console_instances, api,
                                                                  artifacts):
    restarting = serve_process(rate_limits=False)  # this test's own: it is stopped and started again
    page = await people()
    username = await sign_up(page, restarting.url, "steady")
    friend = await api.register("friend")
    status, me, _ = await api.request("GET", f"/users/{username}", token=friend.token)
    assert status == 200
    status, conv, _ = await api.request("POST", "/conversations", token=friend.token, json={"member_ids": [me["id"]]})
    assert status == 201
    status, _, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=friend.token,
                                     json={"body": "before the restart", "client_id": uuid.uuid4().hex})
    assert status == 201
    await page.get_by_role("button", name="Chat", exact=True).click()
    await page.get_by_role("button", name=re.compile(friend.username)).click()
    await expect(messages(page)).to_contain_text("before the restart")
    await page.evaluate("window.pulseTestMarker = 'same page'")

    restarting.stop()
    await expect(connection(page)).to_contain_text("Reconnecting")
    await page.screenshot(path=str(artifacts / "console-reconnecting.png"))
    # While the page's instance is down, messages arrive through another instance.
    for i in range(3):
        status, _, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=friend.token,
                                         json={"body": f"while you were away {i}", "client_id": uuid.uuid4().hex})
        assert status == 201
    restarting.start()

    await expect(connection(page)).to_have_text("Live")
    for i in range(3):
        await expect(messages(page)).to_contain_text(f"while you were away {i}")
    assert await page.evaluate("window.pulseTestMarker") == "same page"  # no reload
    # Each message exactly once, in order.
    text = await messages(page).inner_text()
    bodies = re.findall(r"(before the restart|while you were away \d)", text)
    assert bodies == ["before the restart"] + [f"while you were away {i}" for i in range(3)]
    # And it is live again: a new message arrives over the socket.
    status, _, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=friend.token,
                                     json={"body": "back again", "client_id": uuid.uuid4().hex})
    assert status == 201
    await expect(messages(page)).to_contain_text("back again")
    await page.screenshot(path=str(artifacts / "console-caught-up.png"))
    restarting.stop()
