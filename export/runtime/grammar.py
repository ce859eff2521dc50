"""Constrained decoding with llguidance: the grammars a request can ask for
(response_format, forced tool calls) and a per-sequence matcher that masks the logits.

Cost, measured with this model's 49152-token vocabulary on a shared 2-core machine:
building the LLTokenizer takes ~0.3 s, once (lazily, on the first matcher); compiling a
grammar ~1 ms. Per decode step, `mask` costs a median ~35 µs (JSON of a schema with
strings, numbers, an enum array; p99 ~0.7 ms): llguidance's bitmask is 5-50 µs at JSON
structure and 100-500 µs inside a string with maxLength, and applying it to the row
~15-25 µs (vectorised: only the allowed tokens' words are unpacked when few are
allowed). One decode step of the model is ~10 ms or more.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .failures import GenerationError
    from .tools import NAME_PATTERN, grammar_schema, tool_call_grammar
except ImportError:  # flat, beside model.py in the Triton model directory
    from failures import GenerationError  # type: ignore[no-redef]
    from tools import NAME_PATTERN, grammar_schema, tool_call_grammar  # type: ignore[no-redef]

_BIT = np.arange(32, dtype=np.uint32)


class Grammars:
    """Builds grammar texts (cheap, no tokenizer) and matchers (tokenizer built on first
    use and kept). Thread-safe: requests are read on Triton's thread, matchers made and
    used on the decode loop's."""

    def __init__(self, tokenizer_json: str, stop_ids: list[int], vocab_size: int):
        self._tokenizer_json = tokenizer_json
        self._stop_ids = list(stop_ids)
        self.vocab_size = vocab_size
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                import llguidance

                self._tokenizer = llguidance.LLTokenizer(
                    _byte_level(self._tokenizer_json),
                    n_vocab=self.vocab_size,
                    eos_token=self._stop_ids,
                )
            return self._tokenizer

    def for_response_format(self, response_format: Any) -> str | None:
        """None for absent or {"type": "text"}; else a grammar for any JSON object
        (json_object) or for the schema (json_schema, `strict` as in
        tools.grammar_schema). Checked here, so that a bad request is refused before it
        is queued."""
        if response_format is None:
            return None
        if not isinstance(response_format, dict):
            raise GenerationError("invalid", "response_format must be an object")
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return _compiled(grammar_schema({"type": "object"}, strict=False), "")
        if kind != "json_schema":
            raise GenerationError(
                "invalid", "response_format.type must be text, json_object or json_schema"
            )
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise GenerationError("invalid", "response_format.json_schema must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise GenerationError(
                "invalid", "response_format.json_schema.name must match ^[a-zA-Z0-9_-]{1,64}$"
            )
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise GenerationError(
                "invalid", "response_format.json_schema.schema must be a JSON schema (an object)"
            )
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise GenerationError("invalid", "response_format.json_schema.strict must be a boolean")
        return _compiled(grammar_schema(schema, strict=bool(strict)), ".json_schema.schema")

    def for_tool_calls(
        self, tools: list[dict[str, Any]], choice: str | dict[str, Any], parallel: bool
    ) -> str:
        """The grammar of tool_choice "required" or a named function (tools.py writes it;
        a parameters schema llguidance cannot compile is refused here)."""
        import llguidance

        grammar = tool_call_grammar(tools, choice, parallel)
        why = llguidance.LLMatcher.validate_grammar(grammar)
        if why:
            raise GenerationError("invalid", f"tools: a parameters schema is not usable: {why}")
        return grammar

    def matcher(self, grammar: str) -> Matcher:
        import llguidance

        inner = llguidance.LLMatcher(self.tokenizer(), grammar, log_level=0)
        if inner.is_error():
            raise GenerationError("invalid", f"grammar: {inner.get_error()}")
        return Matcher(inner, self.vocab_size)


class Matcher:
    """One sequence's place in its grammar (the decode loop's thread only)."""

    def __init__(self, inner: Any, vocab_size: int):
        self._inner = inner
        self._vocab_size = vocab_size
        self._bitmask = np.full((1, (vocab_size + 31) // 32), -1, dtype=np.int32)

    def mask(self, logits: np.ndarray) -> None:
        """In place, on one row: every token the grammar does not allow next → -inf."""
        import llguidance.numpy

        llguidance.numpy.fill_next_token_bitmask(self._inner, self._bitmask)
        words = self._bitmask.reshape(-1).view(np.uint32)
        allowing = np.flatnonzero(words)
        if allowing.size < words.size // 8:
            # Few tokens allowed (JSON structure): keep them, clear the rest at once.
            bits = ((words[allowing, None] >> _BIT) & 1).astype(bool)
            ids = (allowing[:, None] * 32 + _BIT)[bits]
            ids = ids[ids < logits.size]
            kept = logits[ids]
            logits.fill(-np.inf)
            logits[ids] = kept
            return
        if np.all(words == 0xFFFFFFFF):
            return
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little").view(bool)
        logits[~allowed[: logits.size]] = -np.inf

    def accept(self, token_id: int) -> None:
        if not self._inner.consume_token(token_id):
            raise GenerationError(
                "internal", f"the grammar refused token {token_id}: {self._inner.get_error()}"
            )

    def finished(self) -> bool:
        """The grammar is complete and nothing but EOS may follow."""
        return bool(self._inner.is_stopped()) and not self._inner.is_error()

    def accepting(self) -> bool:
        """The text so far is complete (EOS allowed), though more may follow."""
        return bool(self._inner.is_accepting())


def _compiled(schema: dict[str, Any], field: str) -> str:
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    except ValueError as exc:
        raise GenerationError("invalid", f"response_format{field}: {exc}") from exc
    why = llguidance.LLMatcher.validate_grammar(grammar)
    if why:
        raise GenerationError("invalid", f"response_format{field}: {why.strip()}")
    return grammar


def _byte_level(tokenizer_json: str) -> str:
    """The tokenizer as llguidance should read it. A ByteLevel pre-tokenizer makes every
    token a string of GPT-2's byte symbols, but llguidance picks the token bytes from the
    decoder, and an exported decoder may be a Sequence that starts with ByteFallback (then
    llguidance takes "Ġ" literally): such a decoder is replaced by plain ByteLevel, which
    decodes this vocabulary the same (it has no <0xNN> or "▁" pieces; a test checks every
    token's bytes)."""
    spec = json.loads(tokenizer_json)
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if not any(p.get("type") == "ByteLevel" for p in parts if isinstance(p, dict)):
        return tokenizer_json
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True}
    return json.dumps(spec)
