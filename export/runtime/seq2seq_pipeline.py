"""Abstractive summaries from any Hugging Face seq2seq model (T5, BART, ...) exported by
optimum (export/hf_seq2seq_export.py): the runner of the "hf-seq2seq" kind, with the
Triton I/O of the built-in `summarize` model so the frontend serves it unchanged.

What runs, per dynamic batch:
  - each text is `prefix` + text (e.g. T5's "summarize: "), tokenized by the model's own
    tokenizer.json (its post-processor adds the model's special tokens, e.g. "</s>") and
    truncated to `max_length` tokens, special tokens included (what the Hugging Face
    tokenizer does with truncation=True, max_length=...);
  - rows are sorted by length and cut into chunks of at most `chunk_rows`; per chunk the
    encoder (encoder_model.onnx) runs once over the right-padded rows, then greedy
    decoding step by step with the merged decoder (decoder_model_merged.onnx: the first
    step without past, use_cache_branch false; every later step feeds the last token and
    the past key values): argmax; where the model's generation config names them, its
    forced_bos_token_id at the first step and its forced_eos_token_id at a row's last
    (what PyTorch's generate does). A row stops at an eos id or its MAX_TOKENS; a stopped
    row keeps feeding pad (rows of a batch never see each other, so the others' tokens are
    unchanged) and its further tokens are dropped;
  - `cancelled()` is polled between steps (at most every `cancel_poll_s`): BatchCancelled.
Pure greedy: the generation config's beam search, n-gram bans, min length and penalties
are not applied (the export-time check compares with PyTorch's greedy generate, the same
settings).

The ids (decoder_start_token_id, eos_token_id, pad_token_id, forced_bos_token_id,
forced_eos_token_id) come from generation_config.json, else config.json. Execution
providers: `providers` (comma separated, e.g. "CUDAExecutionProvider,CPUExecutionProvider"
for the gpu target), those this onnxruntime build has, the CPU provider always last. The
past key values go back through host memory at every step (plain session.run, no I/O
binding).

Plain Python (no triton_python_backend_utils), so unit tests drive it without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .batch_model import (
        BatchCancelled,
        ItemError,
        decode_utf8_texts,
        string_column,
        throttled,
    )
except ImportError:  # flat import beside model.py in the Triton repository
    from batch_model import (  # type: ignore[no-redef]
        BatchCancelled,
        ItemError,
        decode_utf8_texts,
        string_column,
        throttled,
    )

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model_merged.onnx"
METHOD = "abstractive"  # the only method: the model writes the summary
OUTPUTS = ("SUMMARY", "METHOD", "SENTENCES", "SOURCE_SENTENCES", "CHUNKS", "NUM_TOKENS")


@dataclass(frozen=True)
class Options:
    max_new_tokens: int


@dataclass(frozen=True)
class GenerationIds:
    decoder_start: int
    eos: frozenset[int]
    pad: int
    forced_bos: int | None
    forced_eos: int | None


def generation_ids(version_dir: Path) -> GenerationIds:
    config = json.loads((version_dir / "config.json").read_text(encoding="utf-8"))
    path = version_dir / "generation_config.json"
    generation = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def pick(key: str) -> Any:
        value = generation.get(key)
        return config.get(key) if value is None else value

    start, eos, pad = (pick(k) for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"))
    if start is None or eos is None:
        raise ValueError("the model names no decoder_start_token_id or eos_token_id")
    eos_ids = frozenset(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    forced_bos, forced_eos = pick("forced_bos_token_id"), pick("forced_eos_token_id")
    return GenerationIds(
        decoder_start=int(start),
        eos=eos_ids,
        pad=int(pad) if pad is not None else min(eos_ids),
        forced_bos=None if forced_bos is None else int(forced_bos),
        forced_eos=None if forced_eos is None else int(forced_eos),
    )


def make_session(path: Path, params: dict[str, str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(params.get("ort_intra_op_threads", 1))
    options.inter_op_num_threads = 1
    # Spinning threads win on an idle machine and lose 2-3x on shared cores.
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", params.get("ort_allow_spinning", "0")
    )
    available = set(ort.get_available_providers())
    wanted = [p for p in params.get("providers", "CPUExecutionProvider").split(",") if p]
    providers = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=[*providers, "CPUExecutionProvider"])


class Seq2SeqPipeline:
    """decode(raw, offset) -> texts; options(extra, n) -> Options per text;
    run(items, cancelled) -> the summarize model's outputs, one row per text."""

    def __init__(self, version_dir: Path, params: dict[str, str]):
        from tokenizers import Tokenizer

        self.ids = generation_ids(version_dir)
        self.max_length = int(params.get("max_length", 512))
        self.prefix = params.get("prefix", "")
        self.default_max_tokens = int(params.get("default_max_tokens", 128))
        self.max_tokens_limit = int(params.get("max_tokens_limit", 512))
        self.chunk_rows = int(params.get("chunk_rows", 16))
        self.cancel_poll_s = float(params.get("cancel_poll_s", 0.1))
        # utf-8 named: the Triton stub's default encoding is ASCII.
        text = (version_dir / "tokenizer.json").read_text(encoding="utf-8")
        self.tokenizer = Tokenizer.from_str(text)
        self.tokenizer.no_padding()
        # Counts the special tokens the post-processor adds, as the HF tokenizer does.
        self.tokenizer.enable_truncation(self.max_length)
        self.encoder = make_session(version_dir / ENCODER_FILE, params)
        self.decoder = make_session(version_dir / DECODER_FILE, params)
        self.providers = list(self.decoder.get_providers())
        self.encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        inputs = {i.name: i for i in self.decoder.get_inputs()}
        if "use_cache_branch" not in inputs:
            raise ValueError(f"{DECODER_FILE} is not a merged decoder (no use_cache_branch)")
        self.decoder_inputs = set(inputs)
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.past_shapes = {n: inputs[n].shape for n in self.past_names}
        self.past_dtype = np.float16 if "float16" in inputs[self.past_names[0]].type else np.float32

    # --- per request -------------------------------------------------------------------

    def decode(self, raw: np.ndarray, offset: int = 0) -> list[str]:
        return decode_utf8_texts(raw, "TEXT", offset)

    def options(self, extra: dict[str, np.ndarray], n: int) -> list[Options]:
        methods = _column(extra, "METHOD", n)
        _column(extra, "MAX_SENTENCES", n)  # extractive only: read, checked, unused
        tokens = _column(extra, "MAX_TOKENS", n)
        out = []
        for i in range(n):
            if methods is not None:
                _method(methods[i], i)
            t = self.default_max_tokens if tokens is None else int(tokens[i])
            if not 1 <= t <= self.max_tokens_limit:
                raise ItemError(
                    f"MAX_TOKENS[{i}]: {t} is out of range; use 1..{self.max_tokens_limit}"
                )
            out.append(Options(t))
        return out

    # --- the model ---------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        return [list(e.ids) for e in encodings]

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids and their attention mask."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.ids.pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        return ids, mask

    def encode(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder over right-padded rows: (hidden states, attention mask)."""
        ids, mask = self.pad(rows)
        feeds = {"input_ids": ids, "attention_mask": mask}
        hidden = self.encoder.run(
            ["last_hidden_state"], {k: v for k, v in feeds.items() if k in self.encoder_inputs}
        )[0]
        return hidden, mask

    def step(
        self,
        tokens: np.ndarray,
        hidden: np.ndarray,
        mask: np.ndarray,
        past: dict[str, np.ndarray] | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One decoder step: the last position's logits [rows, vocab] and the new past.
        The cross-attention keys and values are computed at the first step and kept."""
        first = past is None
        if past is None:
            past = {n: self._empty_past(n, len(tokens)) for n in self.past_names}
        feeds = {
            "input_ids": tokens,
            "encoder_hidden_states": hidden,
            "encoder_attention_mask": mask,
            "use_cache_branch": np.array([not first]),
            **past,
        }
        names = [o.name for o in self.decoder.get_outputs()]
        values = self.decoder.run(
            names, {k: v for k, v in feeds.items() if k in self.decoder_inputs}
        )
        out = dict(zip(names, values, strict=True))
        new_past = {}
        for name in self.past_names:
            present = "present." + name[len("past_key_values.") :]
            keep = not first and ".encoder." in name
            new_past[name] = past[name] if keep else out[present]
        return np.asarray(out["logits"][:, -1, :], dtype=np.float32), new_past

    def _empty_past(self, name: str, rows: int) -> np.ndarray:
        _, heads, _, size = self.past_shapes[name]
        if not isinstance(heads, int) or not isinstance(size, int):
            raise ValueError(f"{DECODER_FILE}: {name} has no static head count or size")
        return np.zeros((rows, heads, 0, size), dtype=self.past_dtype)

    def generate(
        self, rows: list[list[int]], limits: list[int], poll: Callable[[], bool]
    ) -> list[list[int]]:
        """Greedy ids of one chunk, each row up to and with its eos, or `limits[r]` ids."""
        ids = self.ids
        hidden, mask = self.encode(rows)
        n = len(rows)
        tokens = np.full((n, 1), ids.decoder_start, dtype=np.int64)
        done = np.zeros(n, dtype=np.bool_)
        out: list[list[int]] = [[] for _ in rows]
        past = None
        for step in range(max(limits)):
            if poll():
                raise BatchCancelled(f"cancelled at decoding step {step}")
            logits, past = self.step(tokens, hidden, mask, past)
            chosen = logits.argmax(axis=-1)
            if step == 0 and ids.forced_bos is not None:
                chosen[:] = ids.forced_bos
            for r in np.flatnonzero(~done):
                token = int(chosen[r])
                if ids.forced_eos is not None and len(out[r]) + 1 == limits[r]:
                    token = ids.forced_eos  # the model's last token at its limit
                out[r].append(token)
                if token in ids.eos or len(out[r]) >= limits[r]:
                    done[r] = True
            if done.all():
                break
            tokens = np.where(done, ids.pad, chosen).astype(np.int64).reshape(n, 1)
        return out

    # --- the batch ---------------------------------------------------------------------

    def run(self, items: list[Any], cancelled: Callable[[], bool]) -> dict[str, np.ndarray]:
        default = Options(self.default_max_tokens)
        pairs = [item if isinstance(item, tuple) else (item, default) for item in items]
        rows = self.tokenize([text for text, _ in pairs])
        poll = throttled(cancelled, self.cancel_poll_s)
        generated: list[list[int]] = [[] for _ in rows]
        order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
        for start in range(0, len(order), self.chunk_rows):
            chunk = order[start : start + self.chunk_rows]
            limits = [pairs[r][1].max_new_tokens for r in chunk]
            for r, ids in zip(
                chunk, self.generate([rows[r] for r in chunk], limits, poll), strict=True
            ):
                generated[r] = ids
        n = len(rows)
        summaries = self.tokenizer.decode_batch(generated, skip_special_tokens=True)
        return {
            "SUMMARY": string_column(s.strip() for s in summaries),
            "METHOD": string_column([METHOD] * n),
            "SENTENCES": string_column(["[]"] * n),
            "SOURCE_SENTENCES": np.zeros((n, 1), dtype=np.int32),
            "CHUNKS": np.ones((n, 1), dtype=np.int32),
            "NUM_TOKENS": np.array([[len(r)] for r in rows], dtype=np.int32).reshape(-1, 1),
        }


def _column(extra: dict[str, np.ndarray], name: str, n: int) -> np.ndarray | None:
    if name not in extra:
        return None
    values = np.asarray(extra[name]).reshape(-1)
    if values.size != n:
        raise ItemError(f"{name}: {values.size} values for {n} texts; send one per text")
    if name != "METHOD" and values.dtype.kind not in "iu":
        raise ItemError(f"{name}: must be integers (INT32), got {values.dtype}")
    return values


def _method(raw: Any, i: int) -> None:
    try:
        text = bytes(raw).decode("utf-8") if isinstance(raw, bytes | np.bytes_) else str(raw)
    except UnicodeDecodeError:
        raise ItemError(f"METHOD[{i}]: is not valid UTF-8") from None
    if text not in ("", METHOD):
        raise ItemError(f"METHOD[{i}]: {text[:40]!r} is not offered by this model; use abstractive")
