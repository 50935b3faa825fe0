"""Rate limits: failed logins (per account and per client address), requests per token,
socket sends per socket. All off with ``PULSE_RATE_LIMITS=off``.

Logins fail closed (no Redis, no login: a brute force must not get through an outage);
everything else fails open (an outage must not lock out normal use).
"""
from __future__ import annotations

import logging
import math
import time

from server.config import Settings
from server.errors import RateLimited, StoreUnavailable
from storage.redis.rate_limit import RateLimitCounters
from storage.redis.sessions_cache import REDIS_ERRORS

log = logging.getLogger("pulse.ratelimit")

REQUEST_WINDOW_SECONDS = 60


class RateLimits:
    def __init__(self, counters: RateLimitCounters, settings: Settings) -> None:
        self.counters = counters
        self.settings = settings
        self.enabled = settings.rate_limits
        # Per-token request counts: hits not yet added to Redis, and each token's shared
        # (all instances) count with the monotonic time its window ends, as of the last sync.
        self._unsynced: dict[str, int] = {}
        self._shared: dict[str, tuple[int, float]] = {}
        self._synced_at = float("-inf")
        self._syncing = False

    async def check_login_allowed(self, account: str, address: str) -> None:
        if not self.enabled:
            return
        s = self.settings
        try:
            for bucket, subject, limit in (
                ("login-account", account, s.login_failures_per_account),
                ("login-address", address, s.login_failures_per_address),
            ):
                state = await self.counters.peek(bucket, subject)
                if state.count >= limit:
                    raise RateLimited(state.retry_after or s.login_failure_window_seconds,
                                      "Too many failed logins; try again later.")
        except REDIS_ERRORS as exc:
            raise StoreUnavailable("redis", "Login is unavailable for a moment; try again shortly.") from exc

    async def record_login_failure(self, account: str, address: str) -> None:
        if not self.enabled:
            return
        window = self.settings.login_failure_window_seconds
        try:
            await self.counters.hit("login-account", account, window)
            await self.counters.hit("login-address", address, window)
        except REDIS_ERRORS as exc:
            log.warning("could not count a failed login: %s", exc)

    async def clear_login_failures(self, account: str) -> None:
        if not self.enabled:
            return
        try:
            await self.counters.reset("login-account", account)
        except REDIS_ERRORS:
            pass

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
        except REDIS_ERRORS as exc:  # fail open: these hits are simply not shared
            log.warning("could not add request counts to the shared windows: %s", exc)
        finally:
            self._syncing = False
            self._synced_at = time.monotonic()
        now = self._synced_at
        self._shared = {t: v for t, v in self._shared.items() if v[1] > now}
        for token, state in states.items():
            self._shared[token] = (state.count, now + state.retry_after)

    async def check_socket_send(self, socket_id: str) -> None:
        if not self.enabled:
            return
        try:
            state = await self.counters.hit("socket-send", socket_id, 10)
        except REDIS_ERRORS:
            return
        if state.count > self.settings.socket_sends_per_10_seconds:
            raise RateLimited(state.retry_after, "Sending too fast; slow down.")
