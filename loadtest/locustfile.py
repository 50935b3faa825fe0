"""Pulse load scenarios for locust.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 [RestUser ChatUser ...]

User classes:
- ``RestUser`` (FastHttpUser): the REST mix — feed, profiles, posts, likes, comments,
  follows, events/RSVPs, notifications — as seeded users (``loadtest.seed``).
- ``ChatUser``: one light Socket.IO socket per seeded chat member, sending chat into its
  group conversation; every receipt by another member is a ``socketio``/``chat delivery``
  sample (send timestamp in the message body → receipt, one clock).
- ``NotificationUser`` + ``FanoutHost``: many online listeners RSVP to the host's event;
  the host cancels it and every attendee's ``notification:new`` is a
  ``socketio``/``notification fan-out`` sample (cancel request → receipt).

Options (also as env vars): ``--seed-file``, ``--rest-hosts`` / ``--socket-hosts``
(comma-separated base URLs; users are spread round-robin, default ``--host``),
``--rest-wait``, ``--chat-interval``, ``--fanout-interval``.
"""
from __future__ import annotations

import collections
import csv
import itertools
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone

from locust import FastHttpUser, User, constant, events, task
from locust.exception import StopUser

from loadtest.aio import bridge_for
from loadtest.realtime_session import FANOUT_DELIVERY, SOCKETIO, RealtimeSession
from loadtest.seeddata import API, DEFAULT_SEED_FILE, seed_data


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    group = parser.add_argument_group("pulse")
    group.add_argument("--seed-file", default=str(DEFAULT_SEED_FILE),
                       env_var="PULSE_SEED_FILE", help="seed.json written by loadtest.seed")
    group.add_argument("--rest-hosts", default="", env_var="PULSE_REST_HOSTS",
                       help="comma-separated base URLs for REST users (default: --host)")
    group.add_argument("--socket-hosts", default="", env_var="PULSE_SOCKET_HOSTS",
                       help="comma-separated base URLs for sockets (default: --host)")
    group.add_argument("--rest-wait", type=float, default=1.0, env_var="PULSE_REST_WAIT",
                       help="mean seconds between a REST user's requests")
    group.add_argument("--chat-interval", type=float, default=2.0,
                       env_var="PULSE_CHAT_INTERVAL", help="seconds between a chat user's sends")
    group.add_argument("--samples-file", default="", env_var="PULSE_SAMPLES_FILE",
                       help="write every sample (t, type, name, ms, failed) to this CSV at exit")
    group.add_argument("--fanout-interval", type=float, default=8.0,
                       env_var="PULSE_FANOUT_INTERVAL",
                       help="seconds between the fan-out host's event cancellations")


class SampleRecorder:
    """Every request/delivery with its time since test start, written at exit.

    Locust's own CSV has whole-run percentiles only; the bench report uses these raw
    samples for exact per-step, steady-state figures.
    """

    def __init__(self, path: str):
        self.path = path
        self.started = time.time()
        self.rows: list[tuple] = []

    def on_test_start(self, **_):
        self.started = time.time()
        self.rows.clear()

    def on_request(self, request_type, name, response_time, response_length=0,
                   exception=None, **_):
        self.rows.append((round(time.time() - self.started, 3), request_type, name,
                          round(float(response_time), 3), 1 if exception else 0))

    def write(self, **_):
        # Wall-clock start, to line the samples up with other time series (pool gauges).
        with open(self.path + ".start", "w") as handle:
            handle.write(f"{self.started:.3f}\n")
        with open(self.path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["t", "type", "name", "ms", "failed"])
            writer.writerows(self.rows)


@events.init.add_listener
def _record_samples(environment, **_):
    path = _option(environment, "samples_file", "") or os.environ.get("PULSE_SAMPLES_FILE")
    if path:
        recorder = SampleRecorder(path)
        environment.events.test_start.add_listener(recorder.on_test_start)
        environment.events.request.add_listener(recorder.on_request)
        environment.events.quitting.add_listener(recorder.write)


def _hosts(environment, option: str) -> list[str]:
    raw = getattr(environment.parsed_options, option, "") if environment.parsed_options else ""
    hosts = [h.strip().rstrip("/") for h in (raw or "").split(",") if h.strip()]
    return hosts or [environment.host.rstrip("/")]


def _seed(environment):
    path = environment.parsed_options.seed_file if environment.parsed_options else None
    return seed_data(path)


def _option(environment, name: str, default):
    if environment.parsed_options is None:
        return default
    return getattr(environment.parsed_options, name, default)


_host_turn = itertools.count()


def _authorisation(user: FastHttpUser, seed, index: int) -> dict[str, str]:
    """Bearer header for seeded user ``index``: the seed's pre-issued token, else a login."""
    token = seed.tokens.get(index)
    if token is None:
        with user.client.post(f"{API}/auth/login", name=f"{API}/auth/login", catch_response=True,
                              json={"login": seed.users[index]["username"],
                                    "password": seed.password}) as response:
            if response.status_code != 200:
                response.failure(f"login {response.status_code}")
                raise StopUser()
            token = response.json()["token"]
    return {"Authorization": f"Bearer {token}"}


class RestUser(FastHttpUser):
    weight = 6

    def __init__(self, environment):
        hosts = _hosts(environment, "rest_hosts")
        self.host = hosts[next(_host_turn) % len(hosts)]
        super().__init__(environment)
        self.seed = _seed(environment)
        self.rng = random.Random()
        self.recent_posts: collections.deque[str] = collections.deque(maxlen=50)
        self.liked: collections.deque[str] = collections.deque(maxlen=20)
        self.followed: collections.deque[str] = collections.deque(maxlen=20)
        self.headers: dict[str, str] = {}

    def wait_time(self):
        mean = _option(self.environment, "rest_wait", 1.0)
        return self.rng.uniform(0.5 * mean, 1.5 * mean)

    def on_start(self):
        index = self.seed.claim("rest")
        self.me = self.seed.users[index]
        self.headers = _authorisation(self, self.seed, index)

    # Helpers -----------------------------------------------------------------------
    def _post_id(self) -> str | None:
        if self.recent_posts and self.rng.random() < 0.7:
            return self.rng.choice(self.recent_posts)
        return self.rng.choice(self.seed.post_ids) if self.seed.post_ids else None

    def _other_user(self) -> dict:
        for _ in range(5):
            user = self.seed.popular_user(self.rng)
            if user["id"] != self.me["id"]:
                return user
        return self.seed.users[0] if self.seed.users[0]["id"] != self.me["id"] else self.seed.users[1]

    def _remember_posts(self, response):
        try:
            for item in response.json().get("items", [])[:10]:
                self.recent_posts.append(item["id"])
        except Exception:
            pass

    # Reads -------------------------------------------------------------------------
    @task(30)
    def read_feed(self):
        with self.client.get(f"{API}/feed?limit=20", name=f"{API}/feed", headers=self.headers,
                             catch_response=True) as response:
            if response.status_code == 200:
                self._remember_posts(response)

    @task(20)
    def read_profile(self):
        user = self._other_user()
        self.client.get(f"{API}/users/{user['id']}", name=f"{API}/users/{{id}}",
                        headers=self.headers)

    @task(5)
    def read_user_posts(self):
        user = self._other_user()
        with self.client.get(f"{API}/users/{user['id']}/posts?limit=20",
                             name=f"{API}/users/{{id}}/posts", headers=self.headers,
                             catch_response=True) as response:
            if response.status_code == 200:
                self._remember_posts(response)

    @task(6)
    def read_post(self):
        post_id = self._post_id()
        if post_id:
            self.client.get(f"{API}/posts/{post_id}", name=f"{API}/posts/{{id}}",
                            headers=self.headers)

    @task(4)
    def read_comments(self):
        post_id = self._post_id()
        if post_id:
            self.client.get(f"{API}/posts/{post_id}/comments?limit=20",
                            name=f"{API}/posts/{{id}}/comments", headers=self.headers)

    @task(2)
    def read_popular(self):
        self.client.get(f"{API}/posts/popular?limit=20", name=f"{API}/posts/popular",
                        headers=self.headers)

    @task(3)
    def read_events(self):
        self.client.get(f"{API}/events?limit=20", name=f"{API}/events", headers=self.headers)

    @task(4)
    def read_unread_count(self):
        self.client.get(f"{API}/notifications/unread-count",
                        name=f"{API}/notifications/unread-count", headers=self.headers)

    @task(2)
    def read_notifications(self):
        self.client.get(f"{API}/notifications?limit=20", name=f"{API}/notifications",
                        headers=self.headers)

    # Writes ------------------------------------------------------------------------
    @task(4)
    def create_post(self):
        body = f"Load test post {self.rng.randrange(10**9)} about " + self.rng.choice(
            ["coffee", "code", "music", "events", "latency", "weekend"])
        with self.client.post(f"{API}/posts", name=f"{API}/posts", json={"body": body},
                              headers=self.headers, catch_response=True) as response:
            if response.status_code == 201:
                self.recent_posts.append(response.json()["id"])

    @task(8)
    def like(self):
        post_id = self._post_id()
        if post_id:
            self.client.put(f"{API}/posts/{post_id}/like", name=f"{API}/posts/{{id}}/like",
                            headers=self.headers)
            self.liked.append(post_id)

    @task(2)
    def unlike(self):
        if self.liked:
            post_id = self.liked.popleft()
            self.client.delete(f"{API}/posts/{post_id}/like", name=f"{API}/posts/{{id}}/like",
                               headers=self.headers)

    @task(4)
    def comment(self):
        post_id = self._post_id()
        if post_id:
            self.client.post(f"{API}/posts/{post_id}/comments",
                             name=f"{API}/posts/{{id}}/comments", headers=self.headers,
                             json={"body": "Nice one, load test comment."})

    @task(3)
    def follow(self):
        user = self._other_user()
        self.client.put(f"{API}/users/{user['id']}/follow", name=f"{API}/users/{{id}}/follow",
                        headers=self.headers)
        self.followed.append(user["id"])

    @task(1)
    def unfollow(self):
        if self.followed:
            user_id = self.followed.popleft()
            self.client.delete(f"{API}/users/{user_id}/follow",
                               name=f"{API}/users/{{id}}/follow", headers=self.headers)

    @task(3)
    def rsvp(self):
        if not self.seed.event_ids:
            return
        event_id = self.rng.choice(self.seed.event_ids)
        status = self.rng.choice(["going", "going", "interested", "not_going"])
        with self.client.put(f"{API}/events/{event_id}/rsvp", name=f"{API}/events/{{id}}/rsvp",
                             json={"status": status}, headers=self.headers,
                             catch_response=True) as response:
            # A full event answers 409 by contract: that is the right answer, not an error.
            if response.status_code == 409:
                response.success()


class ChatUser(User):
    """A chat member on one socket; its group's members sit on alternating instances."""

    weight = 3

    def wait_time(self):
        # Sends are fire-and-forget (the asyncio side measures them): a jittered interval
        # keeps the chat users from sending in lockstep.
        return _option(self.environment, "chat_interval", 2.0) * random.uniform(0.8, 1.2)

    def on_start(self):
        seed = _seed(self.environment)
        self.bridge = bridge_for(self.environment)
        index = seed.claim("chat")
        self.conversation = seed.conversation_of(index)
        hosts = _hosts(self.environment, "socket_hosts")
        user = seed.users[index]
        self.session = RealtimeSession(self.bridge, base_url=hosts[index % len(hosts)],
                                       login=user["username"], password=seed.password,
                                       index=index, token=seed.tokens.get(index))
        try:
            self.bridge.run(self.session.start(), timeout=30)
        except Exception:
            raise StopUser()
        self.rng = random.Random()

    @task(20)
    def send_chat(self):
        if self.conversation:
            self.bridge.submit(self.session.send_chat(self.conversation["id"]))

    @task(1)
    def read_history(self):
        if self.conversation:
            self.bridge.submit(self.session.rest(
                "GET", f"{API}/conversations/{self.conversation['id']}/messages?limit=20",
                f"{API}/conversations/{{id}}/messages"))

    @task(1)
    def send_over_rest(self):
        if self.conversation:
            from loadtest.realtime_session import chat_body
            import uuid

            self.bridge.submit(self.session.rest(
                "POST", f"{API}/conversations/{self.conversation['id']}/messages",
                f"{API}/conversations/{{id}}/messages",
                json={"body": chat_body(self.session.index), "client_id": uuid.uuid4().hex},
                ok=(200, 201)))

    def on_stop(self):
        session = getattr(self, "session", None)
        if session is not None:
            self.bridge.submit(session.stop())


class FanoutState:
    """The host's current event and when each cancellation was sent (this process only)."""

    def __init__(self):
        self.current_event_id: str | None = None
        self.cancelled_at: dict[str, float] = {}
        self.lock = threading.Lock()


FANOUT = FanoutState()


class NotificationUser(User):
    """An online listener: keeps a socket open and RSVPs to the host's current event."""

    weight = 2
    wait_time = constant(1.0)

    def on_start(self):
        seed = _seed(self.environment)
        self.bridge = bridge_for(self.environment)
        index = seed.claim("notify")
        hosts = _hosts(self.environment, "socket_hosts")
        user = seed.users[index]
        self.session = RealtimeSession(self.bridge, base_url=hosts[index % len(hosts)],
                                       login=user["username"], password=seed.password,
                                       index=index, on_notification=self._on_notification,
                                       token=seed.tokens.get(index))
        self.rsvped: str | None = None
        try:
            self.bridge.run(self.session.start(), timeout=30)
        except Exception:
            raise StopUser()

    def _on_notification(self, notification: dict, received_at: float) -> None:
        # Runs on the asyncio thread: only reads shared state.
        if notification.get("type") != "event_cancelled":
            return
        event_id = (notification.get("metadata") or {}).get("event_id")
        sent_at = FANOUT.cancelled_at.get(event_id)
        if sent_at is not None:
            self.bridge.record(SOCKETIO, FANOUT_DELIVERY, max(0.0, (received_at - sent_at) * 1000))

    @task
    def follow_the_host(self):
        event_id = FANOUT.current_event_id
        if event_id and event_id != self.rsvped:
            self.rsvped = event_id
            # Spread over a few seconds: RSVPs lock the event row, and a crowd arriving
            # in the same millisecond would measure lock queueing rather than fan-out.
            delay = random.uniform(0, 0.4 * _option(self.environment, "fanout_interval", 8.0))
            self.bridge.submit(self._rsvp_later(event_id, delay))

    async def _rsvp_later(self, event_id: str, delay: float) -> None:
        import asyncio

        await asyncio.sleep(delay)
        await self.session.rest("PUT", f"{API}/events/{event_id}/rsvp",
                                f"{API}/events/{{id}}/rsvp", json={"status": "going"},
                                ok=(200, 404, 409))  # 404: cancelled meanwhile

    def on_stop(self):
        session = getattr(self, "session", None)
        if session is not None:
            self.bridge.submit(session.stop())


class FanoutHost(FastHttpUser):
    """Creates an event, lets listeners RSVP, cancels it: one request, many notifications."""

    fixed_count = 1
    weight = 1

    def __init__(self, environment):
        self.host = _hosts(environment, "rest_hosts")[0]
        super().__init__(environment)

    def wait_time(self):
        return _option(self.environment, "fanout_interval", 8.0)

    def on_start(self):
        seed = _seed(self.environment)
        # The host is the last seeded user: never a chat member or an early listener.
        self.me = seed.users[-1]
        self.headers = _authorisation(self, seed, len(seed.users) - 1)
        self._create_event()

    def _create_event(self):
        starts = datetime.now(timezone.utc) + timedelta(days=7)
        with self.client.post(f"{API}/events", name=f"{API}/events", headers=self.headers,
                              json={"title": "Load test fan-out", "starts_at":
                                    starts.isoformat().replace("+00:00", "Z")},
                              catch_response=True) as response:
            if response.status_code == 201:
                FANOUT.current_event_id = response.json()["id"]

    @task
    def cancel_and_recreate(self):
        event_id = FANOUT.current_event_id
        if event_id:
            FANOUT.cancelled_at[event_id] = time.time()
            self.client.delete(f"{API}/events/{event_id}", name=f"{API}/events/{{id}}",
                               headers=self.headers)
        self._create_event()

    def on_stop(self):
        FANOUT.current_event_id = None
