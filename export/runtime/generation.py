"""Text generation with in-flight batching over an ONNX decoder with KV cache.

Plain Python (numpy + onnxruntime + tokenizers + jinja2), so that the build's parity
check, the tests and the Triton model (`chat_model.py`) run the same code.

One thread runs the loop. Every pass it admits queued sequences into free slots (each
admission is one prefill of that prompt alone), then runs ONE decode step for every
active sequence together: the batch's KV caches are left-padded to a common length and
masked, so sequences of different lengths share the step, join it when they arrive and
leave it when they finish — nobody waits for a whole batch to end. While the set of
sequences is unchanged the `present` outputs become the next step's `past` without a
copy; only a join or a leave rebuilds the batch.
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

REPLACEMENT = "\ufffd"  # what a byte-level tokenizer decodes half a UTF-8 character to


class GenerationError(Exception):
    """Refused or failed; `code` is one of invalid | overloaded | internal."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# The sampling bounds, each one number. The frontend's request schema checks the same
# numbers first (frontend/schemas/chat.py; the packages share no code, so
# tests/unit/test_sampling_bounds.py holds them equal); these are for callers that reach
# Triton's gRPC directly with raw inputs. max_tokens' bound is the model's (`Limits`).
MIN_TEMPERATURE = 0  # greedy
MAX_TEMPERATURE = 2
MAX_TOP_P = 1  # and above 0
MIN_TOP_K = 0  # off; no upper bound: a cut at or above the vocabulary is no cut
MAX_STOP_SEQUENCES = 4  # each non-empty
MAX_SEED = 2**63 - 1  # SEED is INT64, and numpy's generator takes no negative seed


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()


class Sink(Protocol):
    """Where one sequence's events go (a Triton response sender, or a test's list)."""

    def admitted(self, prompt_tokens: int) -> None: ...
    def token(self, token_id: int, text: str, completion_tokens: int) -> None: ...
    def finish(self, reason: str, text: str, completion_tokens: int) -> None: ...
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


class ChatTemplate:
    """The model's own chat template, rendered the way transformers renders it
    (sandboxed jinja2, trim_blocks + lstrip_blocks)."""

    def __init__(self, source: str, special: dict[str, str]):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise GenerationError("invalid", message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        self.template = env.from_string(source)
        self.special = special

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.template.render(messages=messages, add_generation_prompt=True, **self.special)


def validate_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise GenerationError("invalid", "messages must be a non-empty list")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise GenerationError("invalid", f"messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant"):
            raise GenerationError("invalid", f"messages[{i}].role must be system|user|assistant")
        if not isinstance(content, str):
            raise GenerationError("invalid", f"messages[{i}].content must be a string")
        messages.append({"role": role, "content": content})
    return messages


def check_sampling(s: Sampling, max_completion_tokens: int) -> None:
    if not 1 <= s.max_tokens <= max_completion_tokens:
        raise GenerationError("invalid", f"max_tokens must be 1..{max_completion_tokens}")
    if not MIN_TEMPERATURE <= s.temperature <= MAX_TEMPERATURE:
        raise GenerationError(
            "invalid", f"temperature must be {MIN_TEMPERATURE}..{MAX_TEMPERATURE}"
        )
    if not 0 < s.top_p <= MAX_TOP_P:
        raise GenerationError("invalid", f"top_p must be in (0, {MAX_TOP_P}]")
    if s.top_k < MIN_TOP_K:
        raise GenerationError("invalid", f"top_k must be >= {MIN_TOP_K}")
    if len(s.stop) > MAX_STOP_SEQUENCES or any(not x for x in s.stop):
        raise GenerationError(
            "invalid", f"stop takes at most {MAX_STOP_SEQUENCES} non-empty sequences"
        )
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        raise GenerationError("invalid", f"seed must be 0..{MAX_SEED}")


def sample(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """One token from one row of logits: greedy at temperature 0, else temperature,
    top-k, then top-p (nucleus) over what is left."""
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / sampling.temperature
    if 0 < sampling.top_k < x.size:
        kth = np.partition(x, -sampling.top_k)[-sampling.top_k]
        x = np.where(x < kth, -np.inf, x)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, sampling.top_p)) + 1]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of `text` that must not be sent yet: half a UTF-8
    character, or the start of a stop sequence that the next tokens may complete."""
    hold = len(text) - len(text.rstrip(REPLACEMENT))
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return hold


@dataclass(eq=False)
class Sequence:
    prompt_ids: list[int]
    sampling: Sampling
    sink: Sink
    rng: np.random.Generator
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
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

        meta = json.loads((version_dir / "chat.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.template = ChatTemplate(meta["chat_template"], meta["special_tokens"])
        self.stop_ids = set(meta["stop_token_ids"])
        self.layers = int(meta["num_layers"])
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.fail_on_seed = fail_on_seed
        self.session = session or _session(version_dir / "model.onnx", threads, provider)
        # A prefill's past: zero positions of the model's [1, kv heads, 0, head dim].
        past = next(i for i in self.session.get_inputs() if i.name == _past_name(0))
        self._no_past = np.zeros((1, int(past.shape[1]), 0, int(past.shape[3])), np.float32)
        self._lock = threading.Condition()
        self._queue: collections.deque[Sequence] = collections.deque()
        self._rows: list[Sequence] = []
        self._past: list[np.ndarray] = []  # 2 per layer: key, value [rows, heads, len, dim]
        self._mask = np.zeros((0, 0), dtype=np.int64)
        # Taken from the queue for this pass's prefills, not yet in the batch (or ended).
        self._admitting: list[Sequence] = []
        self._stopping = False
        # Shared by every model run: stop() sets its terminate flag, which ends a prefill or
        # a step that is running (onnxruntime checks it between kernels).
        self._run_options = _run_options()
        self._stop_signal = stop_signal
        self._reported = (0, 0)  # the gauges' last values (queued, active)
        self._thread: threading.Thread | None = None

    # --- requests ---------------------------------------------------------------------

    def encode_prompt(self, prompt: str | None, messages: Any) -> list[int]:
        if (prompt is None) == (messages is None):
            raise GenerationError("invalid", "send exactly one of PROMPT or MESSAGES")
        if messages is not None:
            text = self.template.render(validate_messages(messages))
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
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

    def submit(self, prompt_ids: list[int], sampling: Sampling, sink: Sink) -> None:
        """Queue one sequence or refuse it at once (overloaded): never blocks."""
        check_sampling(sampling, self.limits.max_completion_tokens)
        seq = Sequence(prompt_ids, sampling, sink, np.random.default_rng(sampling.seed))
        if self.fail_on_seed is not None and sampling.seed == self.fail_on_seed:
            seq.fail_after = 3
        if self._stopped():  # no new sequence once a stop is announced
            raise _shutting_down()
        with self._lock:
            if self._stopping:
                raise _shutting_down()
            in_system = len(self._queue) + len(self._rows) + len(self._admitting)
            if in_system >= self.limits.slots + self.limits.queue:
                self.metrics.rejected()
                raise GenerationError(
                    "overloaded",
                    f"{len(self._rows)} sequences are generating and {len(self._queue)} wait; "
                    "try again shortly",
                )
            # Sent under the lock, before the loop can see the sequence: the admission
            # response always comes before the first token.
            sink.admitted(len(prompt_ids))
            self._queue.append(seq)
            self._report()
            self._lock.notify()

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
                while self._queue and len(self._rows) + len(self._admitting) < self.limits.slots:
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
            now = (len(self._queue) + len(self._admitting), len(self._rows))
            if now != self._reported:
                self._reported = now
                self.metrics.set_queued(now[0])
                self.metrics.set_active(now[1])

    def _release(self) -> None:
        """The loop has ended: each sequence still here gets its final error, and the
        model session and the batch's cache are let go (the stub can exit at once)."""
        with self._lock:
            self._stopping = True
            pending = [*self._admitting, *self._queue, *self._rows]
            self._admitting, self._rows = [], []
            self._queue.clear()
        self._past, self._mask = [], np.zeros((0, 0), dtype=np.int64)
        self.session = None
        for seq in pending:
            seq.sink.fail(_shutting_down())
        self._report()  # after the final responses

    def _failure(self, exc: Exception) -> GenerationError:
        # A run terminated by stop() fails too: its sequence is ended by the shutdown,
        # not by a fault.
        if self._stopping:
            return _shutting_down()
        self.metrics.failed()
        return GenerationError("internal", f"generation failed: {exc}")

    def _guarded(self, fn: Callable[[Sequence], None], seq: Sequence) -> None:
        try:
            fn(seq)
        except Exception as exc:  # one bad sequence must not take the loop down
            seq.sink.fail(self._failure(exc))

    def _guarded_step(self) -> None:
        try:
            self._step()
        except Exception as exc:
            # A failed batched step leaves no consistent cache: every row ends with an
            # error (a final response), the loop goes on with the next arrivals.
            with self._lock:
                rows, self._rows = self._rows, []
            self._past, self._mask = [], np.zeros((0, 0), dtype=np.int64)
            for seq in rows:
                seq.sink.fail(self._failure(exc))

    def _drop_cancelled(self) -> None:
        keep = []
        for i, seq in enumerate(self._rows):
            if seq.sink.cancelled():
                self.metrics.cancelled()
                seq.sink.finish("cancelled", "", len(seq.generated))
            else:
                keep.append(i)
        if len(keep) < len(self._rows):
            self._keep_rows(keep)

    def _prefill(self, seq: Sequence) -> None:
        if seq.sink.cancelled():
            self.metrics.cancelled()
            seq.sink.finish("cancelled", "", 0)
            return
        n = len(seq.prompt_ids)
        feeds = {
            "input_ids": np.array([seq.prompt_ids], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None, :],
            **self._empty_past(),
        }
        logits, *present = self.session.run(None, feeds, self._run_options)
        seq.position = n
        if self._advance(seq, logits[0, -1]):
            self._join(seq, present, np.ones((1, n), dtype=np.int64))

    def _step(self) -> None:
        rows = self._rows
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.array([[s.generated[-1]] for s in rows], dtype=np.int64),
            "attention_mask": np.concatenate(
                [self._mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1
            ),
            "position_ids": np.array([[s.position] for s in rows], dtype=np.int64),
        }
        for i, array in enumerate(self._past):
            feeds[_past_name(i)] = array
        logits, *present = self.session.run(None, feeds, self._run_options)
        self.metrics.step(len(rows))
        self._past, self._mask = present, feeds["attention_mask"]
        keep = []
        for i, seq in enumerate(rows):
            seq.position += 1
            try:
                going = self._advance(seq, logits[i, -1])
            except Exception as exc:
                self.metrics.failed()
                seq.sink.fail(GenerationError("internal", f"generation failed: {exc}"))
                going = False
            if going:
                keep.append(i)
        if len(keep) < len(rows):
            self._keep_rows(keep)

    def _advance(self, seq: Sequence, logits: np.ndarray) -> bool:
        """Sample one token, send it, and say whether the sequence goes on."""
        if seq.fail_after is not None and len(seq.generated) >= seq.fail_after:
            raise RuntimeError("test build: failure injected for this seed")
        token = sample(logits, seq.sampling, seq.rng)
        self.metrics.tokens(1)
        if token in self.stop_ids:
            self._finish(seq, "stop")
            return False
        seq.generated.append(token)
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        for stop in seq.sampling.stop:
            at = text.find(stop, max(0, seq.sent_chars - len(stop)))
            if at >= 0:
                self._finish(seq, "stop", text[:at])
                return False
        end = len(text) - _held_back(text, seq.sampling.stop)
        delta = text[seq.sent_chars : end] if end > seq.sent_chars else ""
        seq.sent_chars = max(seq.sent_chars, end)
        seq.sink.token(token, delta, len(seq.generated))
        if len(seq.generated) >= seq.sampling.max_tokens or (
            len(seq.prompt_ids) + len(seq.generated) >= self.limits.max_context
        ):
            self._finish(seq, "length", text)  # sends what was held back, if anything
            return False
        return True

    def _finish(self, seq: Sequence, reason: str, text: str | None = None) -> None:
        if text is None:
            text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        seq.sink.finish(reason, text[seq.sent_chars :], len(seq.generated))

    # --- the batch's KV cache -----------------------------------------------------------

    def _empty_past(self) -> dict[str, np.ndarray]:
        return {_past_name(i): self._no_past for i in range(2 * self.layers)}

    def _join(self, seq: Sequence, present: list[np.ndarray], mask: np.ndarray) -> None:
        if not self._rows:
            self._rows, self._past, self._mask = [seq], list(present), mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        self._past = [
            np.concatenate([_pad_left(old, width), _pad_left(new, width)], axis=0)
            for old, new in zip(self._past, present, strict=True)
        ]
        self._mask = np.concatenate(
            [_pad_left_2d(self._mask, width), _pad_left_2d(mask, width)], axis=0
        )
        self._rows.append(seq)

    def _keep_rows(self, keep: list[int]) -> None:
        if not keep:
            self._rows, self._past = [], []
            self._mask = np.zeros((0, 0), dtype=np.int64)
            return
        index = np.array(keep)
        self._rows = [self._rows[i] for i in keep]
        mask = self._mask[index]
        # Columns that are padding for every remaining row are dropped.
        first = int(np.argmax(mask.any(axis=0)))
        self._mask = np.ascontiguousarray(mask[:, first:])
        self._past = [np.ascontiguousarray(p[index][:, :, first:, :]) for p in self._past]


def _shutting_down() -> GenerationError:
    return GenerationError("overloaded", "the model is shutting down")


def _run_options() -> Any:
    import onnxruntime as ort

    return ort.RunOptions()


def _past_name(i: int) -> str:
    return f"past_key_values.{i // 2}.{'key' if i % 2 == 0 else 'value'}"


def _pad_left(array: np.ndarray, width: int) -> np.ndarray:
    missing = width - array.shape[2]
    if missing == 0:
        return array
    return np.pad(array, ((0, 0), (0, 0), (missing, 0), (0, 0)))


def _pad_left_2d(mask: np.ndarray, width: int) -> np.ndarray:
    missing = width - mask.shape[1]
    return mask if missing == 0 else np.pad(mask, ((0, 0), (missing, 0)))


def _session(path: Path, threads: int, provider: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning helps only on an idle machine; the frontend and Triton share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            print("chat: onnxruntime has no CUDA provider here; decoding on the CPU")
    return ort.InferenceSession(str(path), options, providers=providers)


class Collector:
    """A sink that keeps everything (build-time parity, tests, benchmarks)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.prompt_tokens = 0
        self.pieces: list[str] = []
        self.generated_ids: list[int] = []
        self.reason = ""
        self.completion_tokens = 0
        self.error: GenerationError | None = None
        self.cancel_requested = False

    def admitted(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens

    def token(self, token_id: int, text: str, completion_tokens: int) -> None:
        self.generated_ids.append(token_id)
        self.pieces.append(text)
        self.completion_tokens = completion_tokens

    def finish(self, reason: str, text: str, completion_tokens: int) -> None:
        self.pieces.append(text)
        self.reason, self.completion_tokens = reason, completion_tokens
        self.done.set()

    def fail(self, error: GenerationError) -> None:
        self.error = error
        self.done.set()

    def cancelled(self) -> bool:
        return self.cancel_requested

    @property
    def text(self) -> str:
        return "".join(self.pieces)
