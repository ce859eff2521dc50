"""A deadline and a circuit breaker around calls to a backing service (Redis, the
database). After a failed call, requests stop calling it at once (they get the service's
"unavailable" error and their own policy decides) and one background task probes it
every `probe_s` until it answers; then calls resume. So a dead or hung service costs one
deadline to the request that found it, not one per request. Transitions are logged once,
naming only the error's class (messages can carry URLs and their passwords)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        deadline_s: float,
        probe_s: float,
        failures: tuple[type[BaseException], ...],
        unavailable: Callable[[], Exception],
        on_up: Callable[[bool], None],
        on_error: Callable[[str, str], None],
        detach_on_deadline: bool = False,
    ) -> None:
        """`detach_on_deadline`: at the deadline, stop waiting at once and let the call
        finish its cancellation in the background. For a client whose cancellation itself
        can block (SQLAlchemy closes an asyncpg connection gracefully, shielded, for up to
        2 s more), so that no caller ever waits longer than `deadline_s`."""
        self._log = logging.getLogger(f"infergate.{name}")
        self._name = name
        self._deadline_s = deadline_s
        self._probe_s = probe_s
        self._failures = failures
        self._unavailable = unavailable
        self._on_up = on_up
        self._on_error = on_error
        self._detach = detach_on_deadline
        self._detached: set[asyncio.Task[object]] = set()
        self._ping: Callable[[], Awaitable[object]] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.up = True
        on_up(True)

    def attach(self, ping: Callable[[], Awaitable[object]]) -> None:
        self._ping = ping

    async def run(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if not self.up:
            self._on_error(operation, "skipped")
            raise self._unavailable()
        try:
            if self._detach:
                return await self._within_deadline(call)
            async with asyncio.timeout(self._deadline_s):
                return await call()
        except self._failures as exc:
            self.failed(operation, exc)
            raise self._unavailable() from None

    async def _within_deadline(self, call: Callable[[], Awaitable[T]]) -> T:
        task: asyncio.Task[T] = asyncio.ensure_future(call())
        try:
            done, _ = await asyncio.wait({task}, timeout=self._deadline_s)
        except asyncio.CancelledError:  # the caller went away: the call goes too
            self._let_go(task)
            raise
        if not done:
            self._let_go(task)
            raise TimeoutError
        return task.result()

    def _let_go(self, task: asyncio.Task[Any]) -> None:
        """Cancelled, not awaited: kept referenced until done, its outcome retrieved."""
        task.cancel()
        self._detached.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._detached.discard(done)
            if not done.cancelled():
                done.exception()

        task.add_done_callback(finished)

    def failed(self, operation: str, exc: BaseException) -> None:
        """Count a failure seen outside `run` too (the breaker opens)."""
        self._on_error(operation, type(exc).__name__)
        if not self.up:
            return
        self.up = False
        self._on_up(False)
        self._log.warning(
            f"{self._name} unreachable",
            extra={"operation": operation, "error": type(exc).__name__},
        )
        if self._ping is not None and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        assert self._ping is not None
        while not self.up:
            await asyncio.sleep(self._probe_s)
            try:
                async with asyncio.timeout(self._deadline_s):
                    await self._ping()
            except self._failures:
                continue
            except Exception as exc:  # an unexpected error must not end the probing
                self._on_error("probe", type(exc).__name__)
                continue
            self.up = True
            self._on_up(True)
            self._log.warning(f"{self._name} reachable again")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
