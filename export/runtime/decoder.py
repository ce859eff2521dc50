"""The ONNX decoder's side of generation: its session, and the batch's KV cache.

`KVCache` holds the past keys/values of every row of the decode batch, left-padded to one
length, with the attention mask that hides the padding. Rows join (a prefill's cache,
repeated once per choice) at the end and leave by index; while the rows are unchanged a
step's `present` outputs become the next step's past without a copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def past_name(i: int) -> str:
    return f"past_key_values.{i // 2}.{'key' if i % 2 == 0 else 'value'}"


def open_session(path: Path, threads: int, provider: str) -> Any:
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


def run_options() -> Any:
    import onnxruntime as ort

    return ort.RunOptions()


def vocab_size(session: Any, tokenizer: Any) -> int:
    """The logits' width (the model's vocabulary), else the tokenizer's."""
    outputs = getattr(session, "get_outputs", None)
    width = outputs()[0].shape[-1] if outputs is not None else None
    return width if isinstance(width, int) else int(tokenizer.get_vocab_size())


class KVCache:
    def __init__(self, session: Any, layers: int) -> None:
        self.layers = layers
        # A prefill's past: zero positions of the model's [1, kv heads, 0, head dim].
        past = next(i for i in session.get_inputs() if i.name == past_name(0))
        self._no_past = np.zeros((1, int(past.shape[1]), 0, int(past.shape[3])), np.float32)
        self.past: list[np.ndarray] = []  # 2 per layer: key, value [rows, heads, len, dim]
        self.mask = np.zeros((0, 0), dtype=np.int64)

    def clear(self) -> None:
        self.past, self.mask = [], np.zeros((0, 0), dtype=np.int64)

    def empty_past(self) -> dict[str, np.ndarray]:
        return {past_name(i): self._no_past for i in range(2 * self.layers)}

    def prefill_feeds(self, ids: list[int]) -> dict[str, np.ndarray]:
        """One prompt read whole, from no past."""
        n = len(ids)
        return {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None, :],
            **self.empty_past(),
        }

    def step_feeds(self, tokens: list[int], positions: list[int]) -> dict[str, np.ndarray]:
        """The next step's inputs: each row's last token at its position, the past, and
        the mask (one new position for every row)."""
        rows = len(tokens)
        feeds = {
            "input_ids": np.array(tokens, dtype=np.int64)[:, None],
            "position_ids": np.array(positions, dtype=np.int64)[:, None],
            "attention_mask": np.concatenate([self.mask, np.ones((rows, 1), np.int64)], axis=1),
        }
        for i, array in enumerate(self.past):
            feeds[past_name(i)] = array
        return feeds

    def stepped(self, present: list[np.ndarray], mask: np.ndarray) -> None:
        self.past, self.mask = present, mask

    def join(self, present: list[np.ndarray], mask: np.ndarray, copies: int, empty: bool) -> None:
        """New rows at the batch's end: one prefill's cache, `copies` times (its choices).
        `empty`: the batch has no rows yet."""
        if copies > 1:
            present = [np.repeat(p, copies, axis=0) for p in present]
            mask = np.repeat(mask, copies, axis=0)
        if empty:
            self.past, self.mask = list(present), mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.past = [
            np.concatenate([_pad_left(old, width), _pad_left(new, width)], axis=0)
            for old, new in zip(self.past, present, strict=True)
        ]
        self.mask = np.concatenate([_pad_left_2d(self.mask, width), _pad_left_2d(mask, width)])

    def keep(self, keep: list[int]) -> None:
        """Only these rows stay (in this order); none: the cache is empty."""
        if not keep:
            self.clear()
            return
        index = np.array(keep)
        mask = self.mask[index]
        # Columns that are padding for every remaining row are dropped.
        first = int(np.argmax(mask.any(axis=0)))
        self.mask = np.ascontiguousarray(mask[:, first:])
        self.past = [np.ascontiguousarray(p[index][:, :, first:, :]) for p in self.past]


def _pad_left(array: np.ndarray, width: int) -> np.ndarray:
    missing = width - array.shape[2]
    if missing == 0:
        return array
    return np.pad(array, ((0, 0), (0, 0), (missing, 0), (0, 0)))


def _pad_left_2d(mask: np.ndarray, width: int) -> np.ndarray:
    missing = width - mask.shape[1]
    return mask if missing == 0 else np.pad(mask, ((0, 0), (missing, 0)))
