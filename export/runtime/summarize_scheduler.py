"""The `summarize` model's generations in flight (abstractive method): each abstractive
row is a `Job` whose current level is a list of `Call`s to `chat`; the `Scheduler` runs
them and a failed row becomes a `RowFailure`.

Concurrency: `generate` may return its result at once (a tuple) or a `PendingGeneration`
whose `result()` waits for it. The runner's generate returns as soon as the chat model has
admitted the request, so up to `concurrency` generations of the batch (items and chunks)
run together in the chat model's in-flight batch while this thread waits for the oldest;
no thread pool (see summarize_model.py for why).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Protocol

try:  # as the package export.runtime (build, tests)
    from .batch_model import BatchCancelled
    from .summarize_prompt import ChatFailure, Generate, Generation, Messages, PendingGeneration
    from .summarize_settings import Options, Settings
except ImportError:  # flat, beside model.py in the Triton model directory
    from batch_model import BatchCancelled  # type: ignore[no-redef]
    from summarize_prompt import (  # type: ignore[no-redef]
        ChatFailure,
        Generate,
        Generation,
        Messages,
        PendingGeneration,
    )
    from summarize_settings import Options, Settings  # type: ignore[no-redef]


@dataclass(frozen=True)
class RowFailure:
    """A row whose chat call failed: the runner fails that row's request alone."""

    code: str  # invalid | overloaded | internal
    message: str


@dataclass(eq=False)
class Job:
    """One abstractive row: the texts of its current level and their summaries."""

    row: int
    options: Options
    texts: list[str]
    level: int = 0
    chunks: int = 1
    prompt_tokens: int = 0
    summaries: list[str | None] = field(default_factory=list)
    summary: str | None = None
    failed: bool = False
    partial_tokens: int = 0  # the length of this row's partial summaries


@dataclass(frozen=True, eq=False)
class Call:
    job: Job
    index: int
    messages: Messages
    max_tokens: int


class Levels(Protocol):
    """What the scheduler drives (summarize_pipeline.SummarizePipeline): its settings'
    concurrency, its generate, the calls of a job's level and of the next one, and the
    failed rows it collects."""

    settings: Settings
    generate: Generate
    failures: dict[int, RowFailure]

    def calls(self, job: Job) -> list[Call]: ...

    def next_level(self, job: Job) -> list[Call]: ...


class Scheduler:
    """Keeps up to `concurrency` generations in the chat model: starts calls in order
    and waits for the oldest; a finished level queues the next one of its row."""

    def __init__(self, pipeline: Levels, jobs: list[Job], cancelled: Any):
        self.pipeline = pipeline
        self.cancelled = cancelled
        self.ready: collections.deque[Call] = collections.deque()
        for job in jobs:
            self.ready.extend(pipeline.calls(job))
        self.running: collections.deque[tuple[Call, Generation | PendingGeneration]] = (
            collections.deque()
        )
        self.open = {id(job): len(job.texts) for job in jobs}

    def fill(self) -> None:
        limit = self.pipeline.settings.concurrency
        while self.ready and len(self.running) < limit:
            call = self.ready.popleft()
            if call.job.failed:
                continue
            if self.cancelled():
                raise BatchCancelled("cancelled before every summary was started")
            try:
                started = self.pipeline.generate(call.messages, call.max_tokens)
            except ChatFailure as exc:
                self._fail(call.job, exc)
                continue
            self.running.append((call, started))

    def drain(self) -> None:
        while self.running or self.ready:
            self.fill()
            if not self.running:
                continue
            call, started = self.running.popleft()
            try:
                text, prompt_tokens, _ = (
                    started if isinstance(started, tuple) else started.result(self.cancelled)
                )
            except ChatFailure as exc:
                self._fail(call.job, exc)
                continue
            job = call.job
            job.prompt_tokens += prompt_tokens
            job.summaries[call.index] = text.strip()
            self.open[id(job)] -= 1
            if self.open[id(job)] == 0:
                following = self.pipeline.next_level(job)
                self.open[id(job)] = len(following)
                self.ready.extend(following)

    def _fail(self, job: Job, exc: ChatFailure) -> None:
        job.failed = True
        self.pipeline.failures[job.row] = RowFailure(exc.code, str(exc))
        keep: collections.deque[tuple[Call, Generation | PendingGeneration]] = collections.deque()
        for call, started in self.running:
            if call.job is job:
                _cancel(started)
            else:
                keep.append((call, started))
        self.running = keep

    def cancel_all(self) -> None:
        """Ends whatever still runs (after a cancellation or an error)."""
        while self.running:
            _, started = self.running.popleft()
            _cancel(started)


def _cancel(started: Generation | PendingGeneration) -> None:
    if not isinstance(started, tuple):
        started.cancel()
