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
import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .admission import PromptEncoder, new_request
    from .collector import Collector
    from .decoder import KVCache, open_session, run_options, vocab_size
    from .engine_types import Limits, Metrics, Request, Sequence, Sink, ToolUse
    from .failures import GenerationError
    from .grammar import Grammar, Grammars
    from .logprobs import TokenText
    from .messages import ChatTemplate
    from .sampling import Sampling, check_sampling, draw
    from .tools import finished_calls
except ImportError:  # flat, beside model.py in the Triton model directory
    from admission import PromptEncoder, new_request  # type: ignore[no-redef]
    from collector import Collector  # type: ignore[no-redef]
    from decoder import KVCache, open_session, run_options, vocab_size  # type: ignore[no-redef]
    from engine_types import (  # type: ignore[no-redef]
        Limits,
        Metrics,
        Request,
        Sequence,
        Sink,
        ToolUse,
    )
    from failures import GenerationError  # type: ignore[no-redef]
    from grammar import Grammar, Grammars  # type: ignore[no-redef]
    from logprobs import TokenText  # type: ignore[no-redef]
    from messages import ChatTemplate  # type: ignore[no-redef]
    from sampling import Sampling, check_sampling, draw  # type: ignore[no-redef]
    from tools import finished_calls  # type: ignore[no-redef]

__all__ = ["ChatEngine", "Collector", "GenerationError", "Limits", "Metrics", "Sampling"]


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
        # A request's prompt as ids, and the grammar it decodes under (compiled by submit).
        prompts = PromptEncoder(self.tokenizer, self.template, self.vocab_size, limits)
        self.encode_prompt = prompts.encode
        self.grammars = Grammars(tokenizer_json, sorted(self.stop_ids), self.vocab_size)
        self.grammar = self.grammars.for_request
        # Built now (~0.3 s, once per process), not by the first JSON request on Triton's
        # execute thread. Without llguidance (the export extra alone) plain requests
        # still generate; a constrained one fails.
        with contextlib.suppress(ImportError):
            self.grammars.tokenizer()
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

    def submit(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        sink: Sink,
        grammar: Grammar | None = None,
        tools: ToolUse | None = None,
    ) -> None:
        """Queue one request (its n choices) or refuse it at once: never blocks. Room is
        checked before the grammar is compiled (an overloaded model spends nothing on a
        request it refuses), and again when the request is queued."""
        check_sampling(
            sampling, self.limits.max_completion_tokens, self.limits.slots, self.vocab_size
        )
        self._check_room(sampling.n)
        matcher = None if grammar is None else self.grammars.matcher(grammar)
        request = new_request(prompt_ids, sampling, sink, tools, matcher, self.stop_ids)
        if self.fail_on_seed is not None and sampling.seed == self.fail_on_seed:
            request.fail_after = 3
        with self._lock:
            self._check_room(sampling.n)
            # Sent under the lock, before the loop can see the request: the admission
            # response always comes before the first token. Prompt logprobs need the
            # prefill: then the prefill sends it.
            if sampling.prompt_logprobs is None:
                sink.admitted(len(prompt_ids), None)
            self._queue.append(request)
            self._report()
            self._lock.notify()

    def _check_room(self, n: int) -> None:
        """Refuse once a stop is announced, or when n more sequences do not fit."""
        if self._stopped():
            raise _shutting_down()
        with self._lock:  # re-entrant: submit() checks again under it
            if self._stopping:
                raise _shutting_down()
            if self._in_system() + n > self.limits.slots + self.limits.queue:
                self.metrics.rejected()
                raise GenerationError(
                    "overloaded",
                    f"{len(self._rows)} sequences are generating and {len(self._queue)} "
                    "requests wait; try again shortly",
                )

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
        if isinstance(exc, GenerationError):  # the request's own (its bias, its grammar)
            return exc
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
        feeds = self._cache.prefill_feeds(ids)
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
            self._join(going, present, feeds["attention_mask"])

    def _step(self) -> None:
        rows = self._rows
        feeds = self._cache.step_feeds([s.generated[-1] for s in rows], [s.position for s in rows])
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
                self._fail(seq.request, self._failure(exc))
        # A choice that went on before a sibling failed leaves with it.
        keep = [i for i in keep if not rows[i].request.ended]
        if len(keep) < len(rows):
            self._keep_rows(keep)

    def _advance(self, seq: Sequence, logits: np.ndarray) -> bool:
        """Sample one token, send it, and say whether the sequence goes on."""
        fail_after = seq.request.fail_after
        if fail_after is not None and len(seq.generated) >= fail_after:
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
        if request.tools is not None and reason in ("stop", "length"):  # not "cancelled"
            use = request.tools
            rest, calls, reason = finished_calls(rest, reason, use.tools, use.parallel)
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
