"""The `summarize` model's pipeline: plain Python over two callables, so unit tests and
the export-time check drive it without Triton (export/runtime/summarize_model.py gives it
the served `embed` and `chat` models through BLS). It decodes a request's texts and
options, splits the texts into sentences (sentences.py) and runs each row by its method:

extractive (summarize_extractive.py): the `max_sentences` most central sentences,
  verbatim, in text order, joined by one space. One embed pass for the whole batch.
abstractive: `chat`, greedy, with the fixed prompt of summarize.json (summarize_prompt.py);
  a text over the chunk budget is map-reduced (summarize_chunks.py): its chunks are
  summarized ("part", at most `partial_tokens`), then the partial summaries combined
  ("combine", the caller's MAX_TOKENS), level by level. CHUNKS is the number of
  first-level chunks; NUM_TOKENS the prompt tokens of every call. Up to `concurrency`
  generations of the batch run together in the chat model (summarize_scheduler.py).

The options and config parameters: summarize_settings.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .batch_model import ItemError, decode_utf8_texts, string_column, throttled
    from .sentences import split_sentences
    from .summarize_chunks import CHUNK_SEPARATOR, chunk_spans, paragraph_spans, utf8_bytes
    from .summarize_extractive import Embed, extractive_rows
    from .summarize_prompt import (
        FRAME_TOKENS_PER_MESSAGE,
        GENERATION_PROMPT_TOKENS,
        Generate,
        Prompt,
        Stage,
        summary_messages,
    )
    from .summarize_scheduler import Call, Job, RowFailure, Scheduler
    from .summarize_settings import METHODS, Method, Options, Settings
except ImportError:  # flat, beside model.py in the Triton model directory
    from batch_model import (  # type: ignore[no-redef]
        ItemError,
        decode_utf8_texts,
        string_column,
        throttled,
    )
    from sentences import split_sentences  # type: ignore[no-redef]
    from summarize_chunks import (  # type: ignore[no-redef]
        CHUNK_SEPARATOR,
        chunk_spans,
        paragraph_spans,
        utf8_bytes,
    )
    from summarize_extractive import Embed, extractive_rows  # type: ignore[no-redef]
    from summarize_prompt import (  # type: ignore[no-redef]
        FRAME_TOKENS_PER_MESSAGE,
        GENERATION_PROMPT_TOKENS,
        Generate,
        Prompt,
        Stage,
        summary_messages,
    )
    from summarize_scheduler import (  # type: ignore[no-redef]
        Call,
        Job,
        RowFailure,
        Scheduler,
    )
    from summarize_settings import (  # type: ignore[no-redef]
        METHODS,
        Method,
        Options,
        Settings,
    )

OUTPUTS = ("SUMMARY", "METHOD", "SENTENCES", "SOURCE_SENTENCES", "CHUNKS", "NUM_TOKENS")


class SummarizePipeline:
    def __init__(
        self,
        params: dict[str, str],
        embed: Embed,
        generate: Generate,
        *,
        prompt: Prompt,
        count_tokens: Callable[[str], int] | None = None,
    ):
        self.settings = s = Settings.from_params(params)
        self.embed = embed
        self.generate = generate
        self.prompt = prompt
        self.count = count_tokens or utf8_bytes
        overhead = max(
            self.count(prompt.system)
            + self.count(prompt.template(stage).replace("{text}", ""))
            + 2 * FRAME_TOKENS_PER_MESSAGE
            + GENERATION_PROMPT_TOKENS
            for stage in ("whole", "part", "combine")
        )
        # The source text of one call: what the chat prompt limit leaves after the
        # instructions, or less when the config asks for smaller chunks.
        self.budget = min(s.chunk_tokens, s.max_prompt_tokens - overhead - s.prompt_margin_tokens)
        if self.budget < 3 * s.partial_tokens:
            # Each combine level must merge at least two partial summaries, or the
            # map-reduce would not shrink.
            raise ValueError(
                f"a chunk budget of {self.budget} tokens cannot combine partial summaries "
                f"of {s.partial_tokens}; lower partial_tokens or raise chunk_tokens"
            )
        # Rows of the last run whose chat call failed (read by the runner after run()).
        self.failures: dict[int, RowFailure] = {}

    # --- per request -------------------------------------------------------------------

    def decode(self, raw: np.ndarray, offset: int = 0) -> list[str]:
        texts = decode_utf8_texts(raw, "TEXT", offset)
        limit = self.settings.max_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise ItemError(
                    f"TEXT[{offset + i}]: {len(text)} characters is over this model's limit "
                    f"of {limit}"
                )
        return texts

    def options(self, extra: dict[str, np.ndarray], n: int) -> list[Options]:
        s = self.settings
        methods = self._column(extra, "METHOD", n)
        sentences = self._column(extra, "MAX_SENTENCES", n)
        tokens = self._column(extra, "MAX_TOKENS", n)
        out = []
        for i in range(n):
            method = s.default_method if methods is None else self._method(methods[i], i)
            k = s.default_max_sentences if sentences is None else int(sentences[i])
            if not 1 <= k <= s.max_sentences_limit:
                raise ItemError(
                    f"MAX_SENTENCES[{i}]: {k} is out of range; use 1..{s.max_sentences_limit}"
                )
            t = s.default_max_tokens if tokens is None else int(tokens[i])
            if not 1 <= t <= s.max_completion_tokens:
                raise ItemError(
                    f"MAX_TOKENS[{i}]: {t} is out of range; use 1..{s.max_completion_tokens} "
                    "(the chat model's completion limit)"
                )
            out.append(Options(method, k, t))
        return out

    @staticmethod
    def _column(extra: dict[str, np.ndarray], name: str, n: int) -> np.ndarray | None:
        if name not in extra:
            return None
        values = np.asarray(extra[name]).reshape(-1)
        if values.size != n:
            raise ItemError(f"{name}: {values.size} values for {n} texts; send one per text")
        if name != "METHOD" and values.dtype.kind not in "iu":
            raise ItemError(f"{name}: must be integers (INT32), got {values.dtype}")
        return values

    def _method(self, raw: Any, i: int) -> Method:
        try:
            text = bytes(raw).decode("utf-8") if isinstance(raw, bytes | np.bytes_) else str(raw)
        except UnicodeDecodeError:
            raise ItemError(f"METHOD[{i}]: is not valid UTF-8") from None
        if text == "":
            return self.settings.default_method
        if text not in METHODS:
            raise ItemError(
                f"METHOD[{i}]: {text[:40]!r} is not a method; use extractive or abstractive"
            )
        return text  # type: ignore[return-value]

    # --- the batch ---------------------------------------------------------------------

    def run(self, items: list[Any], cancelled: Callable[[], bool]) -> dict[str, np.ndarray]:
        self.failures = {}
        s = self.settings
        defaults = Options(s.default_method, s.default_max_sentences, s.default_max_tokens)
        pairs = [item if isinstance(item, tuple) else (item, defaults) for item in items]
        n = len(pairs)
        summary = [""] * n
        chosen: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        source_sentences = np.zeros(n, dtype=np.int32)
        chunks = np.ones(n, dtype=np.int32)
        tokens = np.zeros(n, dtype=np.int32)
        extractive: list[tuple[int, str, list[tuple[int, int]], int]] = []
        jobs: list[Job] = []
        for row, (text, options) in enumerate(pairs):
            spans = split_sentences(text)
            source_sentences[row] = len(spans)
            if options.method == "extractive":
                extractive.append((row, text, spans, options.max_sentences))
            else:
                jobs.append(self._job(row, text, spans, options))
        poll = throttled(cancelled, s.cancel_poll_s)
        scheduler = Scheduler(self, jobs, poll)
        try:
            # The chat model starts on the abstractive rows while the extractive ones
            # are embedded here.
            scheduler.fill()
            for row, text, picked, read in extractive_rows(
                extractive, poll, self.embed, self.count, s.embed_rows
            ):
                chosen[row] = picked
                summary[row] = " ".join(text[a:b] for _, a, b in picked)
                tokens[row] = read
            scheduler.drain()
        finally:
            scheduler.cancel_all()
        for job in jobs:
            summary[job.row] = job.summary or ""
            chunks[job.row] = job.chunks
            tokens[job.row] = job.prompt_tokens
        return {
            "SUMMARY": string_column(summary),
            "METHOD": string_column(options.method for _, options in pairs),
            "SENTENCES": string_column(
                json.dumps(
                    [{"index": i, "start": a, "end": b} for i, a, b in picked],
                    separators=(",", ":"),
                )
                for picked in chosen
            ),
            "SOURCE_SENTENCES": source_sentences.reshape(-1, 1),
            "CHUNKS": chunks.reshape(-1, 1),
            "NUM_TOKENS": tokens.reshape(-1, 1),
        }

    # --- abstractive -------------------------------------------------------------------

    def _job(self, row: int, text: str, spans: list[tuple[int, int]], options: Options) -> Job:
        body = text.strip()
        partial = self.settings.partial_tokens
        if self.count(body) <= self.budget:
            return Job(row, options, [body], partial_tokens=partial)
        pieces = [text[a:b] for a, b in chunk_spans(text, spans, self.budget, self.count)]
        return Job(row, options, pieces, chunks=len(pieces), partial_tokens=partial)

    def calls(self, job: Job) -> list[Call]:
        """The calls of the job's current level."""
        final = len(job.texts) == 1
        stage: Stage = "combine" if job.level else ("whole" if final else "part")
        limit = job.options.max_tokens
        max_tokens = limit if final else min(limit, job.partial_tokens)
        job.summaries = [None] * len(job.texts)
        return [
            Call(job, i, summary_messages(self.prompt, text, stage), max_tokens)
            for i, text in enumerate(job.texts)
        ]

    def next_level(self, job: Job) -> list[Call]:
        """After every call of a level: done, or the calls that combine its summaries."""
        done = [s for s in job.summaries if s]
        if len(job.texts) == 1 or not done:
            job.summary = done[0] if done else ""
            return []
        joined = CHUNK_SEPARATOR.join(done)
        if self.count(joined) <= self.budget:
            texts = [joined]
        else:
            spans = paragraph_spans(joined)
            texts = [joined[a:b] for a, b in chunk_spans(joined, spans, self.budget, self.count)]
        if len(texts) >= len(job.texts):
            # No fewer texts than before: the partial summaries are long in the counter's
            # units (the byte estimate, without the tokenizer); halve them until two fit.
            job.partial_tokens = max(8, job.partial_tokens // 2)
        job.texts = texts
        job.level += 1
        return self.calls(job)
