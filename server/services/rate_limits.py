"""Rate limits: failed logins (per account and per client address), registrations per
client address, requests per token, client socket events per user. All off with
``PULSE_RATE_LIMITS=off``.

Logins fail closed (no Redis, no login: a brute force must not get through an outage);
everything else fails open (an outage must not lock out normal use).
"""
from __future__ import annotations

import logging
import math
import time

from kernel.errors import RateLimited, StoreUnavailable
from kernel.settings import Settings
from storage.redis.client import RedisUnavailable
from storage.redis.rate_limit import RateLimitStore

log = logging.getLogger("pulse.ratelimit")

REQUEST_WINDOW_SECONDS = 60
REGISTRATION_WINDOW_SECONDS = 3600
SOCKET_EVENT_WINDOW_SECONDS = 10


class RateLimits:
    def __init__(self, counters: RateLimitStore, settings: Settings) -> None:
        self.counters = counters
        self.settings = settings
        self.enabled = settings.rate_limits
        # Per-token request counts: hits not yet added to Redis, and each token's shared
        # (all instances) count with the monotonic time its window ends, as of the last sync.
        self._unsynced: dict[str, int] = {}
        self._shared: dict[str, tuple[int, float]] = {}
        self._synced_at = float("-inf")
        self._syncing = False

    # --- password attempts (logins, restores, re-authentication) ---------------------
    #
    # An attempt is counted BEFORE its password is hashed, in one atomic Redis step per
    # account and per address (``RateLimitStore.reserve``): of N simultaneous guesses
    # at most the limit reach argon2, the rest get 429. A right password gives the
    # attempt back (the limits count failures).

    async def reserve_password_attempt(self, account: str, address: str) -> None:
        """``account``: ``login_subject`` or ``user_subject`` of storage.redis.rate_limit."""
        if not self.enabled:
            return
        s = self.settings
        try:
            reservation = await self.counters.reserve([
                ("login-account", account, s.login_failures_per_account),
                ("login-address", address, s.login_failures_per_address),
            ], s.login_failure_window_seconds)
        except RedisUnavailable as exc:
            raise StoreUnavailable("redis", "Login is unavailable for a moment; try again shortly.") from exc
        if not reservation.granted:
            raise RateLimited(reservation.retry_after, "Too many failed logins; try again later.")

    async def password_attempt_succeeded(self, account: str, address: str) -> None:
        """The account's failures are forgotten; the address gets its attempt back."""
        if not self.enabled:
            return
        try:
            await self.counters.reset("login-account", account)
            await self.counters.release([("login-address", address)])
        except RedisUnavailable as exc:
            log.warning("could not clear the failed-login counters after a success: %s", exc)

    async def password_attempt_not_checked(self, account: str, address: str) -> None:
        """The password was never checked (hashing refused, store down): give it back."""
        if not self.enabled:
            return
        try:
            await self.counters.release([("login-account", account), ("login-address", address)])
        except RedisUnavailable as exc:
            log.warning("could not give back an unchecked login attempt: %s", exc)

    async def reserve_registration(self, address: str) -> None:
        """Every registration attempt costs a password hash: counted per address, before
        hashing. Fails open (the bounded hash pool still holds) when Redis is down."""
        if not self.enabled:
            return
        try:
            reservation = await self.counters.reserve(
                [("register-address", address, self.settings.registrations_per_address_per_hour)],
                REGISTRATION_WINDOW_SECONDS)
        except RedisUnavailable as exc:
            log.warning("could not count a registration attempt: %s", exc)
            return
        if not reservation.granted:
            raise RateLimited(reservation.retry_after, "Too many registrations from this address; try again later.")

    async def check_request(self, token_hash_hex: str) -> None:
        """General per-token limit, far above what a normal client sends.

        Counted here first and added to the shared Redis window in one batch per
        ``request_limit_sync_seconds`` (paid by the request that finds the batch due), not
        a Redis round trip per request: a token is refused once the shared count as of the
        last sync plus this instance's hits since exceed the limit, so with several
        instances a burst can overshoot by what the others served since their last sync.
        """
        if not self.enabled:
            return
        now = time.monotonic()
        self._unsynced[token_hash_hex] = self._unsynced.get(token_hash_hex, 0) + 1
        if not self._syncing and now - self._synced_at >= self.settings.request_limit_sync_seconds:
            await self._sync_request_counts()
            now = time.monotonic()
        shared, window_ends = self._shared.get(token_hash_hex, (0, now))
        if window_ends <= now:
            shared = 0
        if shared + self._unsynced.get(token_hash_hex, 0) > self.settings.requests_per_token_per_minute:
            raise RateLimited(max(1, math.ceil(window_ends - now)) if window_ends > now else REQUEST_WINDOW_SECONDS)

    async def _sync_request_counts(self) -> None:
        self._syncing = True
        hits, self._unsynced = self._unsynced, {}
        states = {}
        try:
            if hits:
                states = await self.counters.add_hits("token", hits, REQUEST_WINDOW_SECONDS)
        except RedisUnavailable as exc:  # fail open: these hits are simply not shared
            log.warning("could not add request counts to the shared windows: %s", exc)
        finally:
            self._syncing = False
            self._synced_at = time.monotonic()
        now = self._synced_at
        self._shared = {t: v for t, v in self._shared.items() if v[1] > now}
        for token, state in states.items():
            self._shared[token] = (state.count, now + state.retry_after)

    def socket_event_limit(self, event: str) -> int:
        """Events of this kind one user may send per ``SOCKET_EVENT_WINDOW_SECONDS``."""
        s = self.settings
        return {
            "message:send": s.socket_sends_per_10_seconds,
            "message:read": s.socket_reads_per_10_seconds,
            "typing": s.socket_typing_per_10_seconds,
            "presence:query": s.socket_presence_queries_per_10_seconds,
        }[event]

    async def check_socket_event(self, event: str, user_id: str) -> None:
        """Per user, whichever of the user's sockets and instances the events come from
        (opening more sockets gives no more budget)."""
        if not self.enabled:
            return
        try:
            state = await self.counters.hit("socket-" + event, user_id, SOCKET_EVENT_WINDOW_SECONDS)
        except RedisUnavailable:
            return
        if state.count > self.socket_event_limit(event):
            raise RateLimited(state.retry_after, "Too many events; slow down.")
