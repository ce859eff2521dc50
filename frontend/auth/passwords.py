"""argon2id password hashes (argon2-cffi defaults: RFC 9106 low-memory profile).

Hashing costs tens of milliseconds of CPU and 64 MiB: it runs in a thread, a few at a
time (`concurrency`), so that logins never block the event loop nor exhaust memory.

Admission to those slots has two lanes so that a flood of guesses cannot monopolise
them: the priority lane (a client that logged in as that user recently, and an admin
creating a user) is served first; in each lane at most `max_waiting` attempts wait, and
one more is refused with 503 + Retry-After before anything is hashed. A slot is held
until its thread has finished, even when the request is cancelled (a client that
disconnects), so the number of hashes running never exceeds `concurrency`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import Overloaded

T = TypeVar("T")
PRIORITY, NORMAL = 0, 1


class HashSlots:
    """At most `size` holders; waiters in the priority lane are served before the others,
    each lane in arrival order."""

    def __init__(self, size: int, max_waiting: int) -> None:
        self._free = size
        self._max_waiting = max_waiting
        self._lanes: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    def waiting(self, lane: int) -> int:
        return sum(1 for f in self._lanes[lane] if not f.done())

    async def acquire(self, lane: int) -> None:
        if self._free > 0 and not any(self.waiting(i) for i in (PRIORITY, NORMAL)):
            self._free -= 1
            return
        if self.waiting(lane) >= self._max_waiting:
            # No queue depth in the message: it would tell a flood how close it is.
            raise Overloaded("sign-in is busy; retry shortly", {"retry_after_s": 1})
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lanes[lane].append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it
                    self._lanes[lane].remove(granted)
            raise

    def release(self) -> None:
        for lane in self._lanes:
            while lane:
                waiter = lane.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot moves to it: _free is unchanged
                    return
        self._free += 1


class Passwords:
    def __init__(self, concurrency: int = 2, max_waiting: int = 8) -> None:
        self._hasher = PasswordHasher()
        self.slots = HashSlots(concurrency, max_waiting)
        # Verified when the user does not exist, so that timing does not tell names apart.
        self._dummy = self._hasher.hash("not-a-password")

    async def _run(self, lane: int, work: Callable[[], T]) -> T:
        await self.slots.acquire(lane)
        job = asyncio.ensure_future(asyncio.to_thread(work))
        job.add_done_callback(self._finished)
        # Shielded: a cancelled request stops waiting, but the thread runs on and keeps
        # its slot until it is done.
        return await asyncio.shield(job)

    def _finished(self, job: asyncio.Future) -> None:
        self.slots.release()
        if not job.cancelled():
            job.exception()  # retrieved, so an abandoned job's error is not reported twice

    async def hash(self, password: str) -> str:
        # Only admins create users: never stuck behind a flood of guesses.
        return await self._run(PRIORITY, lambda: self._hasher.hash(password))

    async def verify(self, stored: str | None, password: str, priority: bool = False) -> bool:
        return await self._run(
            PRIORITY if priority else NORMAL, lambda: self._verify(stored, password)
        )

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
