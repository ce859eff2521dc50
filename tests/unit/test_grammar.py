"""Constrained decoding (export/runtime/grammar.py) against the chat model's real
tokenizer: what a grammar's mask allows is exactly what it accepts, and walks that pick
tokens at random among the allowed ones always end in schema-valid JSON (or in tool
calls whose arguments are valid) — so no sampler, however hot, can break the format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.runtime.failures import GenerationError
from export.runtime.tools import (
    MAX_PARALLEL_CALLS,
    grammar_schema,
    parse_tool_calls,
    validate_tools,
)

TOKENIZER = (
    Path(__file__).resolve().parents[2] / "model_repository" / "chat" / "1" / "tokenizer.json"
)
pytestmark = pytest.mark.skipif(
    not TOKENIZER.exists(),
    reason="needs the chat model's tokenizer: model_repository/chat/1/tokenizer.json is "
    "not built (make models)",
)
STOP_IDS = [0, 2]  # <|endoftext|>, <|im_end|>
VOCAB = 49152

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def grammars():
    from export.runtime.grammar import Grammars

    return Grammars(TOKENIZER.read_text(), STOP_IDS, VOCAB)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER))


def json_schema(schema: dict, strict: bool | None = True) -> dict:
    spec: dict[str, Any] = {"name": "answer", "schema": schema}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def allowed(matcher) -> np.ndarray:
    row = np.zeros(VOCAB, dtype=np.float32)
    matcher.mask(row)
    return np.flatnonzero(np.isfinite(row))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "member"],
}


# --- the tokenizer ----------------------------------------------------------------------


def test_llguidance_reads_every_tokens_bytes_as_the_tokenizer_does(grammars, tokenizer):
    """The grammar works on bytes: llguidance must see the same bytes per token as the
    ByteLevel tokenizer writes (GPT-2's byte↔symbol table inverted)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    symbols = printable + [b for b in range(256) if b not in printable]
    codes = printable + [256 + n for n in range(256 - len(printable))]
    to_byte = {chr(c): b for b, c in zip(symbols, codes, strict=True)}
    special = set(tokenizer.get_added_tokens_decoder())
    llg = grammars.tokenizer()
    wrong = []
    for i in range(VOCAB):
        piece = tokenizer.id_to_token(i)
        expected = piece.encode() if i in special else bytes(to_byte[c] for c in piece)
        if llg.decode_bytes([i]) != expected:
            wrong.append(i)
    assert wrong == []


# --- response_format --------------------------------------------------------------------


def test_text_or_no_format_has_no_grammar(grammars):
    assert grammars.for_response_format(None) is None
    assert grammars.for_response_format({"type": "text"}) is None


@pytest.mark.parametrize(
    ("response_format", "names"),
    [
        ("json", "response_format must be an object"),
        ({}, "response_format.type must be text, json_object or json_schema"),
        ({"type": "yaml"}, "response_format.type must be"),
        ({"type": "json_schema"}, "response_format.json_schema must be an object"),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
            "json_schema.name must match",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": []}},
            "json_schema.schema must be",
        ),
        (json_schema(PERSON, strict="yes"), "response_format.json_schema.strict must be a boolean"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_response_format_is_refused_with_the_reason(grammars, response_format, names):
    with pytest.raises(GenerationError) as refused:
        grammars.for_response_format(response_format)
    assert refused.value.code == "invalid"
    assert str(refused.value).startswith("response_format")
    assert names in str(refused.value)


@pytest.mark.parametrize(
    ("schema", "names"),
    [
        ({"type": "frog"}, "response_format.json_schema.schema: Invalid type: frog"),
        ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
        ({"type": "string", "format": "zodiac"}, "Unknown format: zodiac"),
    ],
)
def test_a_schema_that_does_not_compile_is_refused_with_the_reason(grammars, schema, names):
    grammar = grammars.for_response_format(json_schema(schema, strict=True))
    with pytest.raises(GenerationError) as refused:
        grammars.matcher(grammar)  # submit() compiles it, once the request has room
    assert refused.value.code == "invalid"
    assert names in str(refused.value) and "<non-verbose/>" not in str(refused.value)


def test_not_strict_ignores_what_llguidance_does_not_implement(grammars):
    lenient = json_schema({"type": "string", "format": "zodiac"}, False)
    assert not grammars.matcher(grammars.for_response_format(lenient)).finished()


def test_a_json_schema_without_a_schema_is_any_json(grammars, tokenizer):
    grammar = grammars.for_response_format({"type": "json_schema", "json_schema": {"name": "a"}})
    for text in ('[1, "two", null]', '"just a string"', '{"k": {"n": 2.5}}'):
        matcher = grammars.matcher(grammar)
        for token in ids(tokenizer, text):
            matcher.accept(token)
        assert 2 in allowed(matcher), text  # complete: EOS may follow


def test_a_matcher_past_the_parser_limits_mid_decode_is_an_invalid_request(
    grammars, tokenizer, monkeypatch
):
    from export.runtime import grammar as grammar_module

    # Limits this low stand for a hostile schema: the lexer needs more states as it goes.
    monkeypatch.setitem(grammar_module.PARSER_LIMITS, "max_lexer_states", 20)
    matcher = grammars.matcher(grammars.for_response_format(json_schema(PERSON)))
    row = np.zeros(VOCAB, dtype=np.float32)
    with pytest.raises(GenerationError) as refused:
        for token in ids(tokenizer, '{"name": "Annabelle", "age": 3'):
            matcher.mask(row.copy())
            matcher.accept(token)
    assert refused.value.code == "invalid"
    message = str(refused.value)
    assert message.startswith("response_format: the grammar went past this server's limits")
    assert "too many states" in message and "<non-verbose/>" not in message


def test_every_compile_runs_under_the_explicit_limits(grammars, monkeypatch):
    import llguidance

    from export.runtime import grammar as grammar_module

    made = [
        grammars.for_response_format(json_schema(PERSON)),
        grammars.for_tool_calls(WALK_TOOLS, "required", parallel=True),
    ]
    seen = []
    real = llguidance.LLMatcher

    def made_with(*args, **kwargs):
        seen.append(kwargs.get("limits"))
        return real(*args, **kwargs)

    monkeypatch.setattr(llguidance, "LLMatcher", made_with)
    for grammar in made:
        grammars.matcher(grammar)
    assert len(seen) == 2
    for limits in seen:
        assert limits is not None
        assert limits.max_lexer_states == grammar_module.PARSER_LIMITS["max_lexer_states"]
        assert limits.max_grammar_size == grammar_module.PARSER_LIMITS["max_grammar_size"]
        assert limits.verbose_errors is False


def test_a_copy_moves_on_its_own(grammars, tokenizer):
    grammar = grammars.for_response_format(json_schema(PERSON))
    matcher = grammars.matcher(grammar)
    copy = matcher.copy()
    answer = ids(tokenizer, '{"name": "Ann", "age": 31, "member": true}')
    for token in answer:
        matcher.accept(token)
    assert matcher.finished() and not copy.finished()
    fresh = allowed(grammars.matcher(grammar))
    assert np.array_equal(allowed(copy), fresh)  # still at the start
    for token in answer:
        copy.accept(token)
    assert copy.finished()


def test_valid_tokens_are_accepted_and_finish_the_grammar(grammars, tokenizer):
    matcher = grammars.matcher(grammars.for_response_format(json_schema(PERSON)))
    tokens = ids(tokenizer, '{"name": "Ann", "age": 31, "member": true}')
    for token in tokens:
        assert not matcher.finished()
        assert token in allowed(matcher)
        matcher.accept(token)
    assert matcher.finished()
    assert set(allowed(matcher)) <= set(STOP_IDS)  # only EOS may follow


def test_a_token_off_the_grammar_is_masked_and_refused(grammars, tokenizer):
    matcher = grammars.matcher(grammars.for_response_format(json_schema(PERSON)))
    for token in ids(tokenizer, '{"name": "Ann", "age": '):
        matcher.accept(token)
    now = set(allowed(matcher))
    (letters,) = ids(tokenizer, "abc")[:1]
    assert ids(tokenizer, "3")[0] in now and letters not in now and 2 not in now
    row = np.random.default_rng(0).standard_normal(VOCAB).astype(np.float32)
    before = row.copy()
    matcher.mask(row)
    kept = np.isfinite(row)
    assert np.array_equal(row[kept], before[kept])  # allowed logits untouched
    with pytest.raises(GenerationError) as refused:
        matcher.accept(letters)
    assert refused.value.code == "internal"


def test_whitespace_is_compact(grammars, tokenizer):
    grammar = grammars.for_response_format(json_schema(PERSON))
    for loose in ('{"name":"Ann"', '{ "name"', '{"name": "Ann",\n'):
        matcher = grammars.matcher(grammar)
        with pytest.raises(GenerationError):
            for token in ids(tokenizer, loose):
                matcher.accept(token)


def test_strict_forbids_keys_the_schema_does_not_list(grammars, tokenizer):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    prefix = ids(tokenizer, '{"a": 1, "')
    strict = grammars.matcher(grammars.for_response_format(json_schema(schema, True)))
    loose = grammars.matcher(grammars.for_response_format(json_schema(schema, False)))
    for token in prefix:
        loose.accept(token)  # JSON-schema semantics: more keys may follow
    with pytest.raises(GenerationError):
        for token in prefix:
            strict.accept(token)


def test_json_object_is_any_object(grammars, tokenizer):
    grammar = grammars.for_response_format({"type": "json_object"})
    matcher = grammars.matcher(grammar)
    for token in ids(tokenizer, '{"anything": [1, {"x": null}], "b": "c"}'):
        matcher.accept(token)
    assert matcher.finished()
    with pytest.raises(GenerationError):
        grammars.matcher(grammar).accept(ids(tokenizer, "[")[0])


# --- random walks -----------------------------------------------------------------------

WALK_SCHEMAS: list[tuple[dict, bool]] = [
    (PERSON, True),
    (
        {
            "type": "object",
            "properties": {
                "color": {"enum": ["red", "green", "blue"]},
                "size": {"type": "string", "enum": ["S", "M", "L"]},
                "count": {"type": "integer", "enum": [1, 2, 3]},
            },
            "required": ["color", "size", "count"],
        },
        True,
    ),
    (
        {
            "type": "object",
            "properties": {
                "user": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer", "minimum": 1, "maximum": 99999},
                        "tags": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 5},
                            "minItems": 1,
                            "maxItems": 3,
                        },
                    },
                    "required": ["id", "tags"],
                },
                "score": {"type": "number", "minimum": -1, "maximum": 1},
            },
            "required": ["user", "score"],
        },
        True,
    ),
    (
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 2,
            "maxItems": 4,
        },
        True,
    ),
    (
        {
            "type": "object",
            "properties": {
                "note": {"anyOf": [{"type": "string", "maxLength": 6}, {"type": "null"}]},
                "priority": {"type": "integer", "minimum": -5, "maximum": 5},
                "done": {"type": "boolean"},
            },
            "required": ["priority"],
            "additionalProperties": False,
        },
        False,
    ),
]
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"')


def walk(grammars, tokenizer, grammar: str, rng: np.random.Generator, limit: int = 400):
    """Tokens drawn uniformly among those the mask allows, until the grammar is finished
    (or EOS is drawn where it is allowed). Returns the text and whether it ended."""
    matcher = grammars.matcher(grammar)
    tokens: list[int] = []
    for _ in range(limit):
        if matcher.finished():
            return tokenizer.decode(tokens), True
        choices = allowed(matcher)
        assert choices.size, "the mask allows nothing before the grammar is finished"
        token = int(rng.choice(choices))
        if token in STOP_IDS:  # allowed here: the text so far is complete
            return tokenizer.decode(tokens), True
        matcher.accept(token)
        tokens.append(token)
    return tokenizer.decode(tokens), False


def assert_compact(text: str) -> None:
    outside = _STRINGS.sub('""', text).replace(", ", ",").replace(": ", ":")
    assert not re.search(r"\s", outside), text


@pytest.mark.parametrize(("schema", "strict"), WALK_SCHEMAS)
def test_random_walks_end_in_schema_valid_json(grammars, tokenizer, schema, strict):
    grammar = grammars.for_response_format(json_schema(schema, strict))
    checked = {k: v for k, v in grammar_schema(schema, strict).items() if k != "x-guidance"}
    validator = jsonschema.Draft202012Validator(checked)
    rng = np.random.default_rng(len(json.dumps(schema)))
    for _ in range(10):  # 50 walks over the 5 schemas
        text, ended = walk(grammars, tokenizer, grammar, rng)
        assert ended, text
        value = json.loads(text)
        assert not list(validator.iter_errors(value)), (text, schema)
        assert_compact(text)


WALK_TOOLS = validate_tools(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "maxLength": 10},
                        "unit": {"enum": ["C", "F"]},
                    },
                    "required": ["city", "unit"],
                },
                "strict": True,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "x": {"type": "integer", "minimum": -100, "maximum": 100},
                        "y": {"type": "integer", "minimum": -100, "maximum": 100},
                    },
                    "required": ["x", "y"],
                    "additionalProperties": False,
                },
            },
        },
        {"type": "function", "function": {"name": "now", "strict": True}},  # closed: no keys
    ]
)


@pytest.mark.parametrize(
    ("choice", "parallel"),
    [
        ("required", True),
        ("required", False),
        ({"type": "function", "function": {"name": "add"}}, True),
        ({"type": "function", "function": {"name": "get_weather"}}, False),
    ],
)
def test_random_walks_of_the_tool_call_grammar_parse_into_valid_calls(
    grammars, tokenizer, choice, parallel
):
    grammar = grammars.for_tool_calls(WALK_TOOLS, choice, parallel)
    by_name = {t["function"]["name"]: t["function"] for t in WALK_TOOLS}
    rng = np.random.default_rng(7 if parallel else 8)
    for _ in range(8):
        text, ended = walk(grammars, tokenizer, grammar, rng)
        assert ended, text
        content, calls = parse_tool_calls(text, WALK_TOOLS, parallel)
        assert content == "" and calls, text
        # Every block is a call (a repeated one too), at most MAX_PARALLEL_CALLS.
        blocks = re.findall(r"<tool_call>\n(.*?)\n</tool_call>", text, re.S)
        assert len(calls) == len(blocks) <= (MAX_PARALLEL_CALLS if parallel else 1)
        for call in calls:
            name = call["function"]["name"]
            if isinstance(choice, dict):
                assert name == choice["function"]["name"]
            function = by_name[name]
            schema = grammar_schema(function["parameters"], bool(function.get("strict")))
            schema.pop("x-guidance")
            arguments = json.loads(call["function"]["arguments"])
            jsonschema.validate(arguments, schema)


def test_one_call_without_parallel_finishes_the_grammar(grammars, tokenizer):
    named = {"type": "function", "function": {"name": "now"}}
    text = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    single = grammars.matcher(grammars.for_tool_calls(WALK_TOOLS, named, parallel=False))
    several = grammars.matcher(grammars.for_tool_calls(WALK_TOOLS, named, parallel=True))
    for token in ids(tokenizer, text):
        single.accept(token)
        several.accept(token)
    assert single.finished()
    assert not several.finished()  # complete (EOS allowed), but "\n<tool_call>" may follow
    assert 2 in allowed(several) and ids(tokenizer, "\n")[0] in allowed(several)


def test_an_unusable_parameters_schema_is_refused(grammars):
    tools = validate_tools(
        [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "strict": True,
                    "parameters": {"type": "object", "properties": {"a": {"type": "frog"}}},
                },
            }
        ]
    )
    grammar = grammars.for_tool_calls(tools, "required", parallel=False)
    with pytest.raises(GenerationError) as refused:
        grammars.matcher(grammar)
    assert refused.value.code == "invalid" and "frog" in str(refused.value)
    assert str(refused.value).startswith("tools: a parameters schema is not usable: ")
