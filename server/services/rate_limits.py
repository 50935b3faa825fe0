"""Rate limits: failed logins (per account and per client address), requests per token,
socket sends per socket. All off with ``PULSE_RATE_LIMITS=off``.

Logins fail closed (no Redis, no login: a brute force must not get through an outage);
everything else fails open (an outage must not lock out normal use).
"""
from __future__ import annotations

import logging

from server.config import Settings
from server.errors import RateLimited, StoreUnavailable
from storage.redis.rate_limit import RateLimitCounters
from storage.redis.sessions_cache import REDIS_ERRORS

log = logging.getLogger("pulse.ratelimit")


class RateLimits:
    def __init__(self, counters: RateLimitCounters, settings: Settings) -> None:
        self.counters = counters
        self.settings = settings
        self.enabled = settings.rate_limits

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
        """General per-token limit, far above what a normal client sends."""
        if not self.enabled:
            return
        try:
            state = await self.counters.hit("token", token_hash_hex, 60)
        except REDIS_ERRORS:
            return
        if state.count > self.settings.requests_per_token_per_minute:
            raise RateLimited(state.retry_after)

    async def check_socket_send(self, socket_id: str) -> None:
        if not self.enabled:
            return
        try:
            state = await self.counters.hit("socket-send", socket_id, 10)
        except REDIS_ERRORS:
            return
        if state.count > self.settings.socket_sends_per_10_seconds:
            raise RateLimited(state.retry_after, "Sending too fast; slow down.")
