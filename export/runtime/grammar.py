"""Constrained decoding with llguidance: the grammars a request can ask for
(response_format, forced tool calls) and a per-choice matcher that masks the logits.

Cost, measured with this model's 49152-token vocabulary on a shared 2-core machine:
building the LLTokenizer takes ~0.3 s, once per process (when the engine is built, so
that no request pays it on Triton's execute thread); compiling a grammar ~1 ms, once per
request (its choices get copies, ~10 µs each). Per decode step, `mask` costs a median
~35 µs (JSON of a schema with strings, numbers, an enum array; p99 ~0.7 ms):
llguidance's bitmask is 5-50 µs at JSON structure and 100-500 µs inside a string with
maxLength, and applying it to the row ~15-25 µs (vectorised: only the allowed tokens'
words are unpacked when few are allowed). One decode step of the model is ~10 ms or more.

A request's schema is untrusted input: every compile and every matcher runs under
explicit `LLParserLimits` (PARSER_LIMITS), below llguidance's defaults where a hostile
schema could make a matcher big (lexer states: memory, ~1-2 kB each; grammar symbols),
and with terse errors (the verbose ones print parser state). A matcher that reaches a
limit while decoding ends its request with an `invalid` error naming the field.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .engine_types import ToolUse
    from .failures import GenerationError
    from .tools import NAME_PATTERN, grammar_schema, tool_call_grammar
except ImportError:  # flat, beside model.py in the Triton model directory
    from engine_types import ToolUse  # type: ignore[no-redef]
    from failures import GenerationError  # type: ignore[no-redef]
    from tools import NAME_PATTERN, grammar_schema, tool_call_grammar  # type: ignore[no-redef]

_BIT = np.arange(32, dtype=np.uint32)

# llguidance.LLParserLimits' arguments. Fuel and Earley items keep llguidance's defaults
# (they bound the time of one step); lexer states and grammar size are lowered from
# 250_000 and 500_000. Measured over the structured-outputs test's 11 schemas, JSON mode
# and its 7 tool-call grammars (random walks, 20 each): at most 65 grammar symbols, and
# every walk within 2 000 lexer states (the nested "contact" schema needs more than 500).
PARSER_LIMITS: dict[str, Any] = {
    "max_lexer_states": 50_000,
    "max_grammar_size": 100_000,
    "verbose_errors": False,
}

# LLTokenizers by (tokenizer.json, vocabulary size, stop ids): built once per process,
# however many engines (a test module builds several); immutable once built.
_TOKENIZERS: dict[tuple[str, int, tuple[int, ...]], Any] = {}
_TOKENIZERS_LOCK = threading.Lock()


def parser_limits() -> Any:
    import llguidance

    return llguidance.LLParserLimits(**PARSER_LIMITS)


@dataclass(frozen=True)
class Grammar:
    """A grammar a request decodes under, not compiled yet (submit compiles it once per
    request, after the admission check). `about` is the request field it comes from, as
    errors name it; `refusal` leads the error when it does not compile."""

    text: str
    about: str
    refusal: str


class Grammars:
    """Builds grammars (cheap, no tokenizer) and matchers. Thread-safe: requests are read
    and their matchers made on Triton's thread (ChatEngine.submit); each matcher is then
    used on the decode loop's thread only."""

    def __init__(self, tokenizer_json: str, stop_ids: list[int], vocab_size: int):
        self._tokenizer_json = tokenizer_json
        self._stop_ids = list(stop_ids)
        self.vocab_size = vocab_size
        self._tokenizer: Any = None

    def tokenizer(self) -> Any:
        """The LLTokenizer (built on the first call in this process, then shared)."""
        if self._tokenizer is None:
            digest = hashlib.sha256(self._tokenizer_json.encode("utf-8")).hexdigest()
            key = (digest, self.vocab_size, tuple(self._stop_ids))
            with _TOKENIZERS_LOCK:
                if key not in _TOKENIZERS:
                    import llguidance

                    _TOKENIZERS[key] = llguidance.LLTokenizer(
                        _byte_level(self._tokenizer_json),
                        n_vocab=self.vocab_size,
                        eos_token=self._stop_ids,
                    )
                self._tokenizer = _TOKENIZERS[key]
        return self._tokenizer

    def for_request(self, response_format: Any, tools: ToolUse | None) -> Grammar | None:
        """The grammar a request decodes under: a required or named tool call's, else the
        response format's (None: unconstrained)."""
        if tools is not None and tools.choice != "auto":
            return self.for_tool_calls(tools.tools, tools.choice, tools.parallel)
        return self.for_response_format(response_format)

    def for_response_format(self, response_format: Any) -> Grammar | None:
        """None for absent or {"type": "text"}; else a grammar for any JSON object
        (json_object) or for the schema (json_schema, `strict` as in
        tools.grammar_schema; no `schema`: any JSON, as OpenAI allows). The request's
        shape is checked here, before it is queued; the schema itself when it compiles."""
        if response_format is None:
            return None
        if not isinstance(response_format, dict):
            raise GenerationError("invalid", "response_format must be an object")
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            schema = grammar_schema({"type": "object"}, strict=False)
            return _from_schema(schema, "response_format")
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
        given = spec.get("schema")
        schema = {} if given is None else given  # absent (or null): any JSON value
        if not isinstance(schema, dict):
            raise GenerationError(
                "invalid", "response_format.json_schema.schema must be a JSON schema (an object)"
            )
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise GenerationError("invalid", "response_format.json_schema.strict must be a boolean")
        return _from_schema(
            grammar_schema(schema, strict=bool(strict)), "response_format.json_schema.schema"
        )

    def for_tool_calls(
        self, tools: list[dict[str, Any]], choice: str | dict[str, Any], parallel: bool
    ) -> Grammar:
        """The grammar of tool_choice "required" or a named function (tools.py writes it;
        a parameters schema llguidance cannot compile is refused when it compiles)."""
        return Grammar(
            tool_call_grammar(tools, choice, parallel),
            "tools",
            "tools: a parameters schema is not usable",
        )

    def matcher(self, grammar: Grammar) -> Matcher:
        """The grammar compiled (once: a request's other choices take `copy()`s)."""
        import llguidance

        inner = llguidance.LLMatcher(
            self.tokenizer(), grammar.text, log_level=0, limits=parser_limits()
        )
        if inner.is_error():
            raise GenerationError("invalid", f"{grammar.refusal}: {_reason(inner)}")
        return Matcher(inner, self.vocab_size, grammar.about)


class Matcher:
    """One choice's place in its grammar (made on Triton's thread, then used on the
    decode loop's only)."""

    def __init__(self, inner: Any, vocab_size: int, about: str):
        self._inner = inner
        self._vocab_size = vocab_size
        self._about = about
        self._bitmask = np.full((1, (vocab_size + 31) // 32), -1, dtype=np.int32)
        self._masked = False  # the bitmask is this position's

    def copy(self) -> Matcher:
        """Another choice's matcher at the same place (no second compile)."""
        return Matcher(self._inner.deep_copy(), self._vocab_size, self._about)

    def mask(self, logits: np.ndarray) -> None:
        """In place, on one row: every token the grammar does not allow next → -inf."""
        import llguidance.numpy

        llguidance.numpy.fill_next_token_bitmask(self._inner, self._bitmask)
        if self._inner.is_error():  # a parser limit reached: it allows nothing any more
            raise self._gave_up()
        self._masked = True
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
        """A token the mask allowed that the grammar then refuses is the grammar's
        failure (a parser limit reached): `invalid`. A token the mask did not allow is
        the engine's: `internal`."""
        masked, self._masked = self._masked, False
        if self._inner.consume_token(token_id):
            return
        word = int(self._bitmask.reshape(-1).view(np.uint32)[token_id // 32])
        if masked and (word >> (token_id % 32)) & 1:
            raise self._gave_up()
        raise GenerationError(
            "internal", f"the grammar refused token {token_id}: {_reason(self._inner)}"
        )

    def finished(self) -> bool:
        """The grammar is complete and nothing but EOS may follow."""
        return bool(self._inner.is_stopped()) and not self._inner.is_error()

    def _gave_up(self) -> GenerationError:
        return GenerationError(
            "invalid",
            f"{self._about}: the grammar went past this server's limits while decoding "
            f"({_reason(self._inner)}); simplify the schema",
        )


def _reason(inner: Any) -> str:
    # Terse errors end with a "<non-verbose/>" marker line: not for the caller.
    return str(inner.get_error()).replace("<non-verbose/>", "").strip()


def _from_schema(schema: dict[str, Any], about: str) -> Grammar:
    import llguidance

    try:
        text = llguidance.LLMatcher.grammar_from_json_schema(schema)
    except ValueError as exc:
        raise GenerationError("invalid", f"{about}: {exc}") from exc
    return Grammar(text, "response_format", about)


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
