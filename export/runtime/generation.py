"""Text generation with in-flight batching over an ONNX decoder with KV cache.

Plain Python (numpy + onnxruntime + tokenizers + jinja2), so that the build's parity
check, the tests and the Triton model (`chat_model.py`) run the same code.

One thread runs the loop. Every pass it admits queued requests into free slots (each
admission is one prefill of that prompt alone; a request for n choices takes n slots and
its n sequences start from that one prefill), then runs ONE decode step for every active
sequence together: the batch's KV caches are left-padded to a common length and masked,
so sequences of different lengths share the step, join it when they arrive and leave it
when they finish — nobody waits for a whole batch to end. While the set of sequences is
unchanged the `present` outputs become the next step's `past` without a copy; only a
join or a leave rebuilds the batch.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .collector import Collector
    from .decoder import KVCache, open_session, run_options, vocab_size
    from .failures import GenerationError
    from .grammar import Grammars
    from .messages import ChatTemplate, validate_messages
    from .sampling import LogitsPipeline, Sampling, TextStops, TokenText, check_sampling, draw
    from .tools import TOOL_CALL_OPEN, parse_tool_calls
except ImportError:  # flat, beside model.py in the Triton model directory
    from collector import Collector  # type: ignore[no-redef]
    from decoder import KVCache, open_session, run_options, vocab_size  # type: ignore[no-redef]
    from failures import GenerationError  # type: ignore[no-redef]
    from grammar import Grammars  # type: ignore[no-redef]
    from messages import ChatTemplate, validate_messages  # type: ignore[no-redef]
    from sampling import LogitsPipeline, Sampling, TextStops, TokenText, check_sampling, draw  # type: ignore[no-redef]
    from tools import TOOL_CALL_OPEN, parse_tool_calls  # type: ignore[no-redef]

__all__ = ["ChatEngine", "Collector", "GenerationError", "Limits", "Metrics", "Sampling"]

Entries = list[dict[str, Any]]


class Sink(Protocol):
    """Where one request's events go (a Triton response sender, or a test's list).
    `index` names the choice; `last` is true on the finish of the last open choice."""

    def admitted(self, prompt_tokens: int, prompt_logprobs: Entries | None) -> None: ...
    def token(
        self, index: int, token_id: int, text: str, completion_tokens: int, logprobs: Entries | None
    ) -> None: ...
    def finish(
        self,
        index: int,
        reason: str,
        text: str,
        completion_tokens: int,
        tool_calls: Entries | None,
        last: bool,
    ) -> None: ...
    def fail(self, error: GenerationError) -> None: ...
    def cancelled(self) -> bool: ...


class Metrics:
    """No-op counters; the Triton model passes ones exported on Triton's metrics port."""

    def set_active(self, n: int) -> None: ...
    def set_queued(self, n: int) -> None: ...
    def tokens(self, n: int) -> None: ...
    def step(self, rows: int) -> None: ...
    def cancelled(self) -> None: ...
    def rejected(self) -> None: ...
    def failed(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    slots: int = 8  # sequences decoded together
    queue: int = 16  # admitted but waiting for a slot
    max_prompt_tokens: int = 1024
    max_completion_tokens: int = 1024
    max_context: int = 2048  # prompt + completion


@dataclass(frozen=True)
class ToolUse:
    """Tools the answer may call (tool_choice other than "none")."""

    tools: list[dict[str, Any]]
    choice: str | dict[str, Any] = "auto"
    parallel: bool = True


@dataclass(eq=False)
class Request:
    """One request: its choices share the prompt, the prefill and the sink."""

    prompt_ids: list[int]
    sampling: Sampling
    sink: Sink
    tools: ToolUse | None = None
    choices: list[Sequence] = field(default_factory=list)
    open: int = 0  # choices not ended yet
    ended: bool = False  # failed: no more responses


@dataclass(eq=False)
class Sequence:
    request: Request
    index: int
    rng: np.random.Generator
    logits: LogitsPipeline
    text: TextStops
    generated: list[int] = field(default_factory=list)
    position: int = 0  # position id of the next token fed to the model
    # A test build can make the loop raise for one sequence (see `fail_on_seed`).
    fail_after: int | None = None


class ChatEngine:
    def __init__(
        self,
        version_dir: Path,
        limits: Limits,
        threads: int = 2,
        provider: str = "cpu",
        metrics: Metrics | None = None,
        fail_on_seed: int | None = None,
        session: Any = None,
        stop_signal: Callable[[], bool] | None = None,
    ):
        """stop_signal: asked once per pass of the loop while there is work (a cheap
        check, e.g. whether a file exists); once it says yes, the engine stops as by
        request_stop()."""
        from tokenizers import Tokenizer

        meta = json.loads((version_dir / "chat.json").read_text(encoding="utf-8"))
        # utf-8 named: the Triton stub's default encoding is ASCII.
        tokenizer_json = (version_dir / "tokenizer.json").read_text(encoding="utf-8")
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.token_text = TokenText(self.tokenizer)
        self.template = ChatTemplate(meta["chat_template"], meta["special_tokens"])
        self.stop_ids = set(meta["stop_token_ids"])
        self.layers = int(meta["num_layers"])
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.fail_on_seed = fail_on_seed
        self.session = session or open_session(version_dir / "model.onnx", threads, provider)
        self.vocab_size = vocab_size(self.session, self.tokenizer)
        self.grammars = Grammars(tokenizer_json, sorted(self.stop_ids), self.vocab_size)
        self._cache = KVCache(self.session, self.layers)
        self._lock = threading.Condition()
        self._queue: collections.deque[Request] = collections.deque()
        self._rows: list[Sequence] = []
        # Taken from the queue for this pass's prefills, not yet in the batch (or ended).
        self._admitting: list[Request] = []
        self._stopping = False
        # Shared by every model run: stop() sets its terminate flag, which ends a prefill or
        # a step that is running (onnxruntime checks it between kernels).
        self._run_options = run_options()
        self._stop_signal = stop_signal
        self._reported = (0, 0)  # the gauges' last values (queued, active)
        self._thread: threading.Thread | None = None

    # --- requests ---------------------------------------------------------------------

    def encode_prompt(
        self,
        prompt: str | None,
        messages: Any,
        prompt_ids: list[int] | None = None,
        tools: ToolUse | None = None,
    ) -> list[int]:
        """Exactly one of a text prompt, chat messages (rendered with the model's
        template, and the tools when there are any) or token ids."""
        if sum(x is not None for x in (prompt, messages, prompt_ids)) != 1:
            raise GenerationError("invalid", "send exactly one of PROMPT, MESSAGES or PROMPT_IDS")
        if messages is not None:
            listed = None if tools is None else tools.tools
            text = self.template.render(validate_messages(messages), tools=listed)
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        elif prompt_ids is not None:
            ids = [int(i) for i in prompt_ids]
            if not ids or not all(0 <= i < self.vocab_size for i in ids):
                raise GenerationError(
                    "invalid",
                    f"PROMPT_IDS must be a non-empty list of ids 0..{self.vocab_size - 1}",
                )
        else:
            assert prompt is not None
            if not prompt:
                raise GenerationError("invalid", "PROMPT is empty")
            ids = self.tokenizer.encode(prompt).ids
        if len(ids) > self.limits.max_prompt_tokens:
            raise GenerationError(
                "invalid",
                f"the prompt is {len(ids)} tokens; this model takes at most "
                f"{self.limits.max_prompt_tokens}",
            )
        return ids

    def grammar(self, response_format: dict[str, Any] | None, tools: ToolUse | None) -> str | None:
        """The grammar a request decodes under: a required or named tool call's, else the
        response format's (None: unconstrained)."""
        if tools is not None and tools.choice != "auto":
            return self.grammars.for_tool_calls(tools.tools, tools.choice, tools.parallel)
        return self.grammars.for_response_format(response_format)

    def submit(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        sink: Sink,
        grammar: str | None = None,
        tools: ToolUse | None = None,
    ) -> None:
        """Queue one request (its n choices) or refuse it at once: never blocks."""
        check_sampling(
            sampling, self.limits.max_completion_tokens, self.limits.slots, self.vocab_size
        )
        request = Request(prompt_ids, sampling, sink, tools)
        for i in range(sampling.n):
            seed = sampling.seed if i == 0 or sampling.seed is None else [sampling.seed, i]
            matcher = None if grammar is None else self.grammars.matcher(grammar)
            pipeline = LogitsPipeline(sampling, prompt_ids, self.stop_ids, matcher)
            stops = TextStops(sampling, TOOL_CALL_OPEN if tools else None)
            seq = Sequence(request, i, np.random.default_rng(seed), pipeline, stops)
            if self.fail_on_seed is not None and sampling.seed == self.fail_on_seed:
                seq.fail_after = 3
            request.choices.append(seq)
        request.open = sampling.n
        if self._stopped():  # no new sequence once a stop is announced
            raise _shutting_down()
        with self._lock:
            if self._stopping:
                raise _shutting_down()
            if self._in_system() + sampling.n > self.limits.slots + self.limits.queue:
                self.metrics.rejected()
                raise GenerationError(
                    "overloaded",
                    f"{len(self._rows)} sequences are generating and {len(self._queue)} "
                    "requests wait; try again shortly",
                )
            # Sent under the lock, before the loop can see the request: the admission
            # response always comes before the first token. Prompt logprobs need the
            # prefill: then the prefill sends it.
            if sampling.prompt_logprobs is None:
                sink.admitted(len(prompt_ids), None)
            self._queue.append(request)
            self._report()
            self._lock.notify()

    def _in_system(self) -> int:
        return sum(len(r.choices) for r in self._queue) + self._slots_taken()

    def _slots_taken(self) -> int:
        return sum(len(r.choices) for r in self._admitting) + len(self._rows)

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> ChatEngine:
        self._thread = threading.Thread(target=self._run, name="chat-decode", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """From any thread, without waiting: refuse new sequences and end the loop within
        one step (a running prefill or step is terminated); every sequence still queued
        or generating gets a final `overloaded` error ("shutting down")."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._run_options.terminate = True

    def stop(self, timeout: float = 5.0) -> None:
        """request_stop(), then wait for the loop thread to end."""
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def busy(self) -> bool:
        """Some sequence is queued, being read or generating."""
        return bool(self._queue or self._rows or self._admitting)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._release()

    def _stopped(self) -> bool:
        if not self._stopping and self._stop_signal is not None and self._stop_signal():
            self.request_stop()
        return self._stopping

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._queue and not self._rows:
                    self._lock.wait()
            if self._stopped():
                return
            with self._lock:
                # Counted until each has joined the batch (or ended), so that admission
                # control never sees a slot as free while its prompt is being read.
                while (
                    self._queue
                    and self._slots_taken() + len(self._queue[0].choices) <= self.limits.slots
                ):
                    self._admitting.append(self._queue.popleft())
            self._report()
            while self._admitting and not self._stopped():
                self._guarded(self._prefill, self._admitting[0])
                with self._lock:
                    self._admitting.pop(0)
                self._report()
            self._drop_cancelled()
            if self._rows and not self._stopping:
                self._guarded_step()
            self._report()

    def _report(self) -> None:
        """The gauges, when they change. Queued: waiting for a slot or being read; with
        active, every sequence not yet ended (the launcher waits for both to read 0
        before it stops Triton). Only on a change: each is a call into Triton, and once
        Triton stops such a call can block the stub (so an idle finalize makes none)."""
        with self._lock:  # re-entrant: submit() reports under it too
            now = (self._in_system() - len(self._rows), len(self._rows))
            if now != self._reported:
                self._reported = now
                self.metrics.set_queued(now[0])
                self.metrics.set_active(now[1])

    def _release(self) -> None:
        """The loop has ended: each request still here gets its final error, and the
        model session and the batch's cache are let go (the stub can exit at once)."""
        with self._lock:
            self._stopping = True
            pending = [*self._admitting, *self._queue, *_requests(self._rows)]
            self._admitting, self._rows = [], []
            self._queue.clear()
        self._cache.clear()
        self.session = None
        for request in pending:
            self._fail(request, _shutting_down())
        self._report()  # after the final responses

    def _failure(self, exc: Exception) -> GenerationError:
        # A run terminated by stop() fails too: its sequence is ended by the shutdown,
        # not by a fault.
        if self._stopping:
            return _shutting_down()
        self.metrics.failed()
        return GenerationError("internal", f"generation failed: {exc}")

    def _fail(self, request: Request, error: GenerationError) -> None:
        """An error ends the whole request, every choice: one final error response."""
        if not request.ended:
            request.ended = True
            request.sink.fail(error)

    def _guarded(self, fn: Callable[[Request], None], request: Request) -> None:
        try:
            fn(request)
        except Exception as exc:  # one bad request must not take the loop down
            self._fail(request, self._failure(exc))

    def _guarded_step(self) -> None:
        try:
            self._step()
        except Exception as exc:
            # A failed batched step leaves no consistent cache: every row ends with an
            # error (a final response), the loop goes on with the next arrivals.
            with self._lock:
                rows, self._rows = self._rows, []
            self._cache.clear()
            for request in _requests(rows):
                self._fail(request, self._failure(exc))

    def _drop_cancelled(self) -> None:
        cancelled = {r for r in _requests(self._rows) if r.sink.cancelled()}
        if not cancelled:
            return
        keep = []
        for i, seq in enumerate(self._rows):
            if seq.request in cancelled:
                self.metrics.cancelled()
                self._end(seq, "cancelled", "")
            else:
                keep.append(i)
        self._keep_rows(keep)

    def _prefill(self, request: Request) -> None:
        if request.sink.cancelled():
            self.metrics.cancelled()
            for seq in request.choices:
                self._end(seq, "cancelled", "")
            return
        ids = request.prompt_ids
        n = len(ids)
        feeds = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None, :],
            **self._cache.empty_past(),
        }
        logits, *present = self.session.run(None, feeds, self._run_options)
        k = request.sampling.prompt_logprobs
        if k is not None:
            request.sink.admitted(n, self.token_text.prompt(logits[0], ids, k))
        going = []
        for seq in request.choices:
            seq.position = n
            if request.sampling.max_tokens == 0:  # scoring the prompt only
                self._end(seq, "length", "")
            elif self._advance(seq, logits[0, -1]):
                going.append(seq)
        if going:
            self._join(going, present, np.ones((1, n), dtype=np.int64))

    def _step(self) -> None:
        rows = self._rows
        feeds = {
            "input_ids": np.array([[s.generated[-1]] for s in rows], dtype=np.int64),
            "position_ids": np.array([[s.position] for s in rows], dtype=np.int64),
            **self._cache.step_feeds(len(rows)),
        }
        logits, *present = self.session.run(None, feeds, self._run_options)
        self.metrics.step(len(rows))
        self._cache.stepped(present, feeds["attention_mask"])
        keep = []
        for i, seq in enumerate(rows):
            seq.position += 1
            if seq.request.ended:  # a sibling choice failed earlier in this step
                continue
            try:
                if self._advance(seq, logits[i, -1]):
                    keep.append(i)
            except Exception as exc:
                self.metrics.failed()
                self._fail(seq.request, GenerationError("internal", f"generation failed: {exc}"))
        # A choice that went on before a sibling failed leaves with it.
        keep = [i for i in keep if not rows[i].request.ended]
        if len(keep) < len(rows):
            self._keep_rows(keep)

    def _advance(self, seq: Sequence, logits: np.ndarray) -> bool:
        """Sample one token, send it, and say whether the sequence goes on."""
        if seq.fail_after is not None and len(seq.generated) >= seq.fail_after:
            raise RuntimeError("test build: failure injected for this seed")
        s = seq.request.sampling
        token, logp = draw(seq.logits.adjust(logits), s, seq.rng, s.logprobs is not None)
        self.metrics.tokens(1)
        if token in self.stop_ids:
            self._end(seq, "stop")
            return False
        seq.logits.accept(token)
        seq.generated.append(token)
        count = len(seq.generated)
        entries = None
        if logp is not None and s.logprobs is not None:
            entries = [self.token_text.generated(token, logp, s.logprobs)]
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        at = seq.text.stop_at(text, count)
        if at is not None:  # the token's response carries no text: the stop is cut
            seq.request.sink.token(seq.index, token, "", count, entries)
            self._end(seq, "stop", text[:at])
            return False
        seq.request.sink.token(seq.index, token, seq.text.delta(text), count, entries)
        if seq.logits.finished():  # the grammar is complete: only EOS could follow
            self._end(seq, "stop", text)
            return False
        if count >= s.max_tokens or len(seq.request.prompt_ids) + count >= self.limits.max_context:
            self._end(seq, "length", text)  # sends what was held back, if anything
            return False
        return True

    def _end(self, seq: Sequence, reason: str, text: str | None = None) -> None:
        """The choice's final response: the text held back, and its tool calls."""
        request = seq.request
        if request.ended:
            return
        if text is None:
            text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        rest, calls = text[seq.text.sent :], None
        # Cut by max_tokens, the calls completed before the cut are still calls (a small
        # model asked for parallel calls may start another and another): they are sent,
        # and the finish reason stays "length" — the answer did not end by itself.
        ended = reason in ("stop", "length")
        if request.tools is not None and ended and TOOL_CALL_OPEN in rest:
            rest, calls = parse_tool_calls(rest, request.tools.tools, request.tools.parallel)
            reason = "tool_calls" if calls and reason == "stop" else reason
        request.open -= 1
        request.sink.finish(
            seq.index, reason, rest, len(seq.generated), calls or None, request.open == 0
        )

    # --- the batch ------------------------------------------------------------------

    def _join(self, seqs: list[Sequence], present: list[np.ndarray], mask: np.ndarray) -> None:
        """New rows (one prefill's choices: its cache repeated) at the batch's end."""
        self._cache.join(present, mask, len(seqs), empty=not self._rows)
        self._rows.extend(seqs)

    def _keep_rows(self, keep: list[int]) -> None:
        self._rows = [self._rows[i] for i in keep]
        self._cache.keep(keep)


def _requests(rows: list[Sequence]) -> list[Request]:
    """The requests of these rows, each once, in order."""
    return list(dict.fromkeys(seq.request for seq in rows))


def _shutting_down() -> GenerationError:
    return GenerationError("overloaded", "the model is shutting down")
