"""Structured outputs through the real chat model, in process: every json_object and
json_schema answer ends by itself ("stop") as JSON that parses and validates, greedy or
sampled hot; forced tool calls ("required", or a named function) parse into calls whose
arguments validate. The schemas bound their strings, arrays and numbers so that a 135M
model's answer finishes within max_tokens; the grammar does the rest. The json_object
cases ask for the stop string "}", which a grammar-constrained answer ignores (its
grammar is the contract). Every grammar compiles and decodes under the runtime's parser
limits (grammar.PARSER_LIMITS).

All cases run at once through one engine (in-flight batching), then again without any
grammar; the tokens/s of both runs are printed (not asserted: a shared CI machine's
figure says little)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from export.runtime.generation import ChatEngine, Collector, Limits, Sampling, ToolUse
from export.runtime.tools import grammar_schema, validate_tool_choice, validate_tools

pytestmark = pytest.mark.integration
jsonschema = pytest.importorskip("jsonschema")

MAX_TOKENS = 200


def text(n: int) -> dict:
    return {"type": "string", "maxLength": n}


def integer(lo: int, hi: int) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def number(lo: float, hi: float) -> dict:
    return {"type": "number", "minimum": lo, "maximum": hi}


def strings(n: int, most: int, least: int = 0) -> dict:
    return {"type": "array", "items": text(n), "minItems": least, "maxItems": most}


def obj(properties: dict, required: list[str] | None = None, **extra: Any) -> dict:
    schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


# (name, schema, strict, prompts): 11 schemas, 44 prompts.
SCHEMAS: list[tuple[str, dict, bool, list[str]]] = [
    (
        "person",
        obj({"name": text(20), "age": integer(0, 120), "city": text(20)}),
        True,
        [
            "Describe a fictional person: name, age and city.",
            "Who is a famous scientist? Give the name, age at death and home city.",
            "Invent a character for a story set in Rome.",
            "Describe your best friend.",
        ],
    ),
    (
        "book",
        obj(
            {
                "title": text(40),
                "author": text(30),
                "year": integer(1000, 2030),
                "genres": strings(15, 3),
            }
        ),
        True,
        [
            "Recommend a classic novel.",
            "Name a book about space travel.",
            "What is a good children's book?",
            "Tell me about a famous poetry collection.",
        ],
    ),
    (
        "weather",
        obj(
            {
                "city": text(20),
                "temperature": number(-50, 60),
                "condition": {"enum": ["sunny", "cloudy", "rainy", "snowy"]},
                "humidity": integer(0, 100),
            }
        ),
        True,
        [
            "What is the weather like in London today?",
            "Give a weather report for Tokyo in winter.",
            "Describe a hot summer day in Cairo.",
            "What is the weather in Oslo in January?",
        ],
    ),
    (
        "product",
        obj(
            {
                "name": text(30),
                "price": number(0, 10000),
                "in_stock": {"type": "boolean"},
                "tags": {
                    "type": "array",
                    "items": {"enum": ["new", "sale", "popular", "eco"]},
                    "maxItems": 3,
                },
            }
        ),
        True,
        [
            "Describe a laptop for sale in an online shop.",
            "List a pair of running shoes as a product.",
            "Create a product entry for a coffee mug.",
            "Describe a bicycle for a store catalogue.",
        ],
    ),
    (
        "sentiment",
        obj(
            {
                "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                "confidence": number(0, 1),
            }
        ),
        True,
        [
            "Classify the sentiment of: 'I love this movie, it was wonderful!'",
            "Classify the sentiment of: 'The service was slow and the food was cold.'",
            "Classify the sentiment of: 'The meeting is at 3 pm.'",
            "Classify the sentiment of: 'What a fantastic day at the beach.'",
        ],
    ),
    (
        "recipe",
        obj({"dish": text(30), "ingredients": strings(20, 5, least=1), "minutes": integer(1, 600)}),
        True,
        [
            "Give me a recipe for pancakes.",
            "How do I make a tomato salad?",
            "Share a simple soup recipe.",
            "What do I need for chocolate cookies?",
        ],
    ),
    (
        "contact",
        obj(
            {
                "person": obj(
                    {
                        "name": text(20),
                        "address": obj({"street": text(30), "city": text(20), "zip": text(10)}),
                    }
                ),
                "email": text(40),
            }
        ),
        True,
        [
            "Create a contact card for a dentist in Boston.",
            "Write the contact details of a bakery owner in Paris.",
            "Make up an address book entry for a teacher.",
            "Give the contact information of a fictional lawyer.",
        ],
    ),
    (
        "answer",
        obj({"answer": text(60), "sources": strings(30, 3)}),
        True,
        [
            "What is the capital of France?",
            "Why is the sky blue?",
            "How many legs does a spider have?",
            "What is photosynthesis?",
        ],
    ),
    (
        "verdict",
        obj({"answer": {"type": "boolean"}, "reason": text(50)}),
        True,
        [
            "Is the Earth flat?",
            "Is water wet?",
            "Can penguins fly?",
            "Is Python a programming language?",
        ],
    ),
    (
        "scores",
        {"type": "array", "items": integer(0, 100), "minItems": 1, "maxItems": 5},
        True,
        [
            "List the test scores of five students.",
            "Give three random numbers between 1 and 100.",
            "What are the ages of your three cousins?",
            "List some temperatures in Celsius.",
        ],
    ),
    (
        "article",
        # Not strict: JSON-schema semantics; additionalProperties written out, optional
        # and nullable fields.
        obj(
            {
                "title": text(40),
                "subtitle": {"anyOf": [text(40), {"type": "null"}]},
                "words": integer(0, 5000),
            },
            required=["title", "words"],
            additionalProperties=False,
        ),
        False,
        [
            "Summarise a news article about electric cars.",
            "Describe a blog post about gardening.",
            "Outline a magazine article about travel in Japan.",
            "Describe a short essay on climate change.",
        ],
    ),
]
# json_object is any object: as OpenAI's guide for JSON mode says, the prompt names what
# the object holds (asked for "a JSON object describing a cat", this model nests and
# repeats keys until max_tokens).
JSON_OBJECT_PROMPTS = [
    "Reply with a JSON object with the keys 'city' and 'country' for Paris.",
    "Describe a cat as a JSON object with the keys 'name', 'colour' and 'age'.",
    "Return a JSON object with the key 'colour' set to your favourite colour.",
    "Answer as a JSON object with the key 'result': what is 2 + 2?",
    "Output a JSON object with the name and age of a person.",
    "Give me a JSON object with the key 'fruits' listing three fruits.",
    "Describe a car as a JSON object with the keys 'make', 'model' and 'year'.",
    "Return a JSON object that says hello.",
    "Give a JSON object with the keys 'first' and 'last' for the first and last days of the week.",
    "Give a JSON object with the keys 'title' and 'author' for a famous novel.",
    "Return a JSON object with the keys 'x' and 'y' for the point (3, 4).",
]
HOT = [(0, 11), (1, 12), (2, 13), (4, 14), (7, 15), (9, 16)]  # (schema, seed) at temperature 0.8

TOOLS = validate_tools(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city",
                "parameters": obj({"city": text(20), "unit": {"enum": ["celsius", "fahrenheit"]}}),
                "strict": True,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two integers",
                "parameters": obj({"a": integer(-1000, 1000), "b": integer(-1000, 1000)}),
                "strict": True,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the web",
                "parameters": obj({"query": text(40)}, additionalProperties=False),
            },
        },
    ]
)
TOOL_CASES: list[tuple[str, Any, bool]] = [
    ("What is the weather in Paris?", "required", False),
    ("What is 12 plus 30?", "required", False),
    ("Find recent news about the Moon landing.", "required", False),
    ("What is the weather in Berlin and in Madrid?", "required", True),
    ("How warm is it in Rome?", {"type": "function", "function": {"name": "get_weather"}}, False),
    # With parallel calls allowed this model repeats a single call until max_tokens.
    ("I need the sum of 7 and 8.", {"type": "function", "function": {"name": "add"}}, False),
    ("Who won the world cup in 2018?", {"type": "function", "function": {"name": "search"}}, False),
]


@dataclass
class Case:
    name: str
    prompt: str
    sampling: Sampling
    response_format: dict | None = None
    tools: ToolUse | None = None
    sink: Collector = field(default_factory=Collector)


def cases() -> list[Case]:
    out = []
    for name, schema, strict, prompts in SCHEMAS:
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": strict},
        }
        for i, prompt in enumerate(prompts):
            out.append(Case(f"{name}-{i}", prompt, Sampling(max_tokens=MAX_TOKENS), fmt))
    for k, (index, seed) in enumerate(HOT):
        name, schema, strict, prompts = SCHEMAS[index]
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": strict},
        }
        hot = Sampling(max_tokens=MAX_TOKENS, temperature=0.8, seed=seed)
        out.append(Case(f"{name}-hot{seed}", prompts[k % len(prompts)], hot, fmt))
    for i, prompt in enumerate(JSON_OBJECT_PROMPTS):
        # Every answer holds "}": were the stop applied, none would parse.
        sampling = Sampling(max_tokens=MAX_TOKENS, stop=("}",))
        out.append(Case(f"object-{i}", prompt, sampling, {"type": "json_object"}))
    for i, (prompt, choice, parallel) in enumerate(TOOL_CASES):
        use = ToolUse(TOOLS, validate_tool_choice(choice, TOOLS), parallel)
        out.append(Case(f"tools-{i}", prompt, Sampling(max_tokens=MAX_TOKENS), tools=use))
    return out


CASES = cases()


def run_all(engine: ChatEngine, all_cases: list[Case], constrained: bool) -> tuple[int, float]:
    """Submits every case at once; returns (completion tokens, seconds)."""
    started = time.monotonic()
    for case in all_cases:
        messages = [{"role": "user", "content": case.prompt}]
        ids = engine.encode_prompt(None, messages, tools=case.tools)
        grammar = engine.grammar(case.response_format, case.tools) if constrained else None
        engine.submit(ids, case.sampling, case.sink, grammar=grammar, tools=case.tools)
    for case in all_cases:
        assert case.sink.done.wait(600), f"{case.name}: no answer in 10 minutes"
    seconds = time.monotonic() - started
    return sum(c.sink.choices[0].completion_tokens for c in all_cases), seconds


@pytest.fixture(scope="module")
def results(repository) -> dict[str, Case]:
    engine = ChatEngine(repository / "chat" / "1", Limits(slots=8, queue=len(CASES))).start()
    try:
        tokens, seconds = run_all(engine, CASES, constrained=True)
        free = [Case(c.name, c.prompt, c.sampling, tools=c.tools) for c in CASES]
        free_tokens, free_seconds = run_all(engine, free, constrained=False)
    finally:
        engine.stop()
    print(
        f"\nstructured outputs: {len(CASES)} requests, with grammar {tokens} tokens in "
        f"{seconds:.1f} s = {tokens / seconds:.1f} tokens/s; the same without grammar "
        f"{free_tokens} tokens in {free_seconds:.1f} s = {free_tokens / free_seconds:.1f} tokens/s"
    )
    return {c.name: c for c in CASES}


def test_there_are_enough_cases():
    kinds = [c.response_format["type"] for c in CASES if c.response_format]
    assert kinds.count("json_schema") >= 40 and kinds.count("json_object") >= 10
    assert sum(c.sampling.temperature > 0 for c in CASES) >= 5


def _validator(fmt: dict) -> Any:
    if fmt["type"] == "json_object":
        return jsonschema.Draft202012Validator({"type": "object"})
    spec = fmt["json_schema"]
    checked = grammar_schema(spec["schema"], spec["strict"])  # strict closes the objects
    checked.pop("x-guidance")
    return jsonschema.Draft202012Validator(checked)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.response_format])
def test_json_answers_stop_parse_and_validate(results, name):
    case = results[name]
    sink = case.sink
    assert sink.error is None, sink.error
    answer = sink.text
    assert sink.reason == "stop", f"{case.prompt!r} ended by {sink.reason}: {answer!r}"
    value = json.loads(answer)
    errors = [e.message for e in _validator(case.response_format).iter_errors(value)]
    assert errors == [], (answer, errors)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.tools])
def test_forced_tool_calls_parse_into_valid_calls(results, name):
    case = results[name]
    sink = case.sink
    assert case.tools is not None and sink.error is None, sink.error
    assert sink.reason == "tool_calls", f"{case.prompt!r} ended by {sink.reason}: {sink.text!r}"
    calls = sink.choices[0].tool_calls
    assert calls and (case.tools.parallel or len(calls) == 1)
    assert sink.text == ""  # the grammar allows nothing but calls
    by_name = {t["function"]["name"]: t["function"] for t in TOOLS}
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        name = call["function"]["name"]
        if isinstance(case.tools.choice, dict):
            assert name == case.tools.choice["function"]["name"]
        function = by_name[name]
        schema = grammar_schema(function["parameters"], bool(function.get("strict")))
        schema.pop("x-guidance")
        jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
