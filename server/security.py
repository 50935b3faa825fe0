"""Password hashing (argon2id, off the event loop) and opaque session tokens."""
from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from kernel.errors import Overloaded
from kernel.settings import Settings

T = TypeVar("T")


class Passwords:
    """argon2id on a bounded pool of its own: at most ``password_hash_threads`` jobs run
    (each holding ``argon2_memory_kib``) and ``password_hash_queue_max`` wait; past that
    a job is refused at once (``Overloaded``, 503) instead of queued without bound."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Verified against when the login names no account, so that an unknown login
        # costs the same time as a wrong password.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        threads = max(1, settings.password_hash_threads)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._capacity = threads + max(0, settings.password_hash_queue_max)
        # Jobs submitted and not finished (running or waiting); released by the job itself,
        # so a request that gives up does not free a slot its hash still occupies.
        self._jobs = 0
        self._jobs_lock = threading.Lock()
        # argon2 runs so far, by kind (counted on the pool's threads, where they run).
        self.hashes = 0
        self.verifications = 0

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the pool, or refuse at once when the pool's queue is full."""
        with self._jobs_lock:
            if self._jobs >= self._capacity:
                raise Overloaded(1, "Too many password checks under way; try again shortly.")
            self._jobs += 1
        try:
            job = self._pool.submit(fn, *args)
        except BaseException:
            self._job_done(None)
            raise
        job.add_done_callback(self._job_done)
        return await asyncio.wrap_future(job)

    def _job_done(self, _: Future | None) -> None:
        with self._jobs_lock:
            self._jobs -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        return await self._run(self._counted_hash, password)

    def _counted_hash(self, password: str) -> str:
        with self._jobs_lock:
            self.hashes += 1
        return self._hasher.hash(password)

    def _verify(self, password_hash: str, password: str) -> bool:
        with self._jobs_lock:
            self.verifications += 1
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            await self._run(self._verify, self._dummy_hash, password)
            return False
        return await self._run(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    # Tokens carry 256 random bits, so a fast hash is enough to keep them unusable at rest.
    return hashlib.sha256(token.encode()).digest()
