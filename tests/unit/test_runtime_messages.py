"""Chat messages (export/runtime/messages.py): OpenAI's forms normalised, bad ones refused
with the field named, and the Hermes-style rendering of tools for a template without
tool support, exactly as the module documents it."""

from __future__ import annotations

import json

import pytest

from export.runtime.failures import GenerationError
from export.runtime.messages import ChatTemplate, validate_messages
from export.runtime.tools import system_prompt_block, validate_tools

# SmolLM2's template (the chat model's; no tool support): a default system prompt when
# the first message is not a system message.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nDefault prompt<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that renders tools itself (as Qwen's does), reduced to what the test reads.
WITH_TOOLS = (
    "{% if tools %}TOOLS={{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments.city }}]"
    "{% endfor %}{{ '\\n' }}{% endfor %}"
)
SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
TOOLS = validate_tools(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
)


def call(call_id: str, city: str) -> dict:
    arguments = json.dumps({"city": city})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


def test_openai_forms_are_normalised():
    messages = validate_messages(
        [
            {
                "role": "developer",
                "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            },
            {"role": "user", "content": "Weather?", "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "Paris")]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "18C"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        ]
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?", "name": "ann"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "18C", "tool_call_id": "c1"},
        {"role": "assistant", "content": "No."},
    ]


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("hi", "messages must be a non-empty list"),
        ([], "messages must be a non-empty list"),
        (["hi"], "messages[0] must be an object"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content is required"),
        ([{"role": "assistant"}], "messages[0].content or tool_calls is required"),
        ([{"role": "user", "content": 3}], "messages[0].content must be a string or a list"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            ],
            "messages[1]: this model does not accept image_url content",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio"}]}],
            "does not accept input_audio content",
        ),
        (
            [{"role": "user", "content": [{"type": "refusal", "refusal": "x"}]}],
            "does not accept refusal",
        ),
        (
            [{"role": "user", "content": [{"text": "x"}]}],
            "messages[0].content[0] must be an object with a type",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            "messages[0].content[0].text must be a string",
        ),
        ([{"role": "user", "content": "x", "name": 5}], "messages[0].name must be a string"),
        (
            [{"role": "user", "content": "x", "tool_calls": []}],
            "messages[0].tool_calls: only assistant",
        ),
        (
            [{"role": "assistant", "content": None, "tool_calls": {}}],
            "messages[0].tool_calls must be a list",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"type": "function"}]}],
            "messages[0].tool_calls[0].id",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**call("c", "x"), "type": "code"}]}],
            'messages[0].tool_calls[0].type must be "function"',
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"arguments": "{}"}}
                    ],
                }
            ],
            "messages[0].tool_calls[0].function must be an object with a name",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments must be JSON text",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments must be a JSON object",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id must be a non-empty string"),
        (
            [{"role": "tool", "content": "x", "tool_call_id": "c1"}],
            "messages[0].tool_call_id 'c1' answers no",
        ),
        (
            [
                {"role": "assistant", "tool_calls": [call("c1", "x")]},
                {"role": "user", "content": "then"},
                {"role": "tool", "content": "x", "tool_call_id": "c1"},
            ],
            "messages[2].tool_call_id 'c1' answers no tool call",
        ),
        (
            [
                {"role": "assistant", "tool_calls": [call("c1", "x")]},
                {"role": "tool", "tool_call_id": "c1"},
            ],
            "messages[1].content is required",
        ),
    ],
)
def test_bad_messages_are_refused_naming_the_field(raw, names):
    with pytest.raises(GenerationError) as refused:
        validate_messages(raw)
    assert refused.value.code == "invalid"
    assert names in str(refused.value)


def test_several_tool_answers_follow_one_assistant_message():
    messages = validate_messages(
        [
            {"role": "user", "content": "Weather in two cities?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [call("a", "Paris"), call("b", "Lyon")],
            },
            {"role": "tool", "tool_call_id": "b", "content": "20C"},
            {"role": "tool", "tool_call_id": "a", "content": "18C"},
        ]
    )
    assert [m.get("tool_call_id") for m in messages] == [None, None, "b", "a"]


def test_without_tools_the_rendering_is_the_templates_own():
    template = ChatTemplate(CHATML, SPECIAL)
    assert not template.supports_tools
    rendered = template.render(validate_messages([{"role": "user", "content": "Hi"}]))
    assert rendered == (
        "<|im_start|>system\nDefault prompt<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_fallback_appends_the_tools_block_to_the_system_message():
    template = ChatTemplate(CHATML, SPECIAL)
    messages = validate_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
        ]
    )
    tools_line = json.dumps(
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": TOOLS[0]["function"]["parameters"],
        }
    )
    assert template.render(messages, TOOLS) == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{tools_line}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_fallback_creates_a_system_message_holding_only_the_block():
    template = ChatTemplate(CHATML, SPECIAL)
    rendered = template.render(validate_messages([{"role": "user", "content": "Hi"}]), TOOLS)
    block = system_prompt_block(TOOLS)
    assert block.startswith("\n\n# Tools")
    assert rendered == (
        f"<|im_start|>system\n{block.lstrip(chr(10))}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "Default prompt" not in rendered


def test_fallback_renders_past_calls_and_merges_tool_answers():
    template = ChatTemplate(CHATML, SPECIAL)
    messages = validate_messages(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Two cities?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [call("a", "Paris"), call("b", "Lyon")],
            },
            {"role": "tool", "tool_call_id": "a", "content": "18C"},
            {"role": "tool", "tool_call_id": "b", "content": "20C"},
            {"role": "assistant", "content": None, "tool_calls": [call("c", "Nice")]},
            {"role": "tool", "tool_call_id": "c", "content": "25C"},
        ]
    )
    rendered = template.render(messages)  # no tools (tool_choice "none"): no block
    assert rendered == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nTwo cities?<|im_end|>\n"
        "<|im_start|>assistant\nChecking.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n18C\n</tool_response>\n"
        "<tool_response>\n20C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n25C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_a_template_with_tool_support_gets_them_and_the_messages_as_they_are():
    template = ChatTemplate(WITH_TOOLS, SPECIAL)
    assert template.supports_tools
    messages = validate_messages(
        [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call("a", "Paris")]},
            {"role": "tool", "tool_call_id": "a", "content": "18C"},
        ]
    )
    assert template.render(messages, TOOLS) == (
        "TOOLS=get_weather\nuser:Paris?\nassistant:[get_weather Paris]\ntool:18C\n"
    )
    assert not template.render(messages).startswith("TOOLS=")


def test_the_templates_raise_exception_is_an_invalid_request():
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}", SPECIAL)
    with pytest.raises(GenerationError) as refused:
        template.render([{"role": "user", "content": "x"}])
    assert refused.value.code == "invalid" and "alternate" in str(refused.value)
