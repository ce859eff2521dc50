"""Sampling and streaming-text rules of the generation engine (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from export.runtime.failures import GenerationError
from export.runtime.generation import GenerationError as ReExported
from export.runtime.sampling import Sampling, draw
from export.runtime.stops import TextStops, held_back
from export.spec import CHAT_OUTPUTS

LOGITS = np.array([0.1, 3.0, 2.9, -1.0, 0.5], dtype=np.float32)


def sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    return draw(logits, s, rng)[0]


def test_generation_error_is_one_class_re_exported():
    assert ReExported is GenerationError


def test_temperature_zero_is_argmax():
    rng = np.random.default_rng(0)
    assert {sample(LOGITS, Sampling(max_tokens=1), rng) for _ in range(20)} == {1}


def test_top_k_one_and_tiny_top_p_are_greedy_even_when_hot():
    rng = np.random.default_rng(0)
    hot_k1 = Sampling(max_tokens=1, temperature=2.0, top_k=1)
    hot_p = Sampling(max_tokens=1, temperature=2.0, top_p=1e-6)
    assert {sample(LOGITS, hot_k1, rng) for _ in range(50)} == {1}
    assert {sample(LOGITS, hot_p, rng) for _ in range(50)} == {1}


def test_top_k_limits_the_candidates():
    rng = np.random.default_rng(0)
    s = Sampling(max_tokens=1, temperature=5.0, top_k=2)
    assert {sample(LOGITS, s, rng) for _ in range(300)} == {1, 2}


def test_same_seed_same_draws_and_frequencies_follow_softmax():
    s = Sampling(max_tokens=1, temperature=1.0)
    a = [sample(LOGITS, s, np.random.default_rng(42)) for _ in range(5)]
    b = [sample(LOGITS, s, np.random.default_rng(42)) for _ in range(5)]
    assert a == b
    rng = np.random.default_rng(7)
    draws = np.bincount([sample(LOGITS, s, rng) for _ in range(20_000)], minlength=5)
    expected = np.exp(LOGITS - LOGITS.max()) / np.exp(LOGITS - LOGITS.max()).sum()
    assert np.allclose(draws / draws.sum(), expected, atol=0.015)


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("Hello wor", ("world",), 3),  # "wor" may become "world"
        ("Hello", ("world",), 0),
        ("caf\ufffd", (), 1),  # half a UTF-8 character
        ("a END", ("END",), 0),  # complete stops are cut by the engine, not held
        ("ab", ("abc", "b!"), 2),
    ],
)
def test_held_back_text(text, stops, held):
    assert held_back(text, stops) == held


def test_text_from_a_tool_call_opening_on_is_held_until_the_end():
    stops = TextStops((), hold="<tool_call>")
    assert stops.delta("Sure. <tool") == "Sure. "  # may become the opening
    assert stops.delta("Sure. <tool_call>\n{") == ""
    assert stops.delta('Sure. <tool_call>\n{"name": "f"}') == ""
    assert stops.sent == len("Sure. ")


def test_a_stop_string_before_min_tokens_does_not_end_the_text():
    stops = TextStops(("END",), min_tokens=2)
    assert stops.stop_at("a END", tokens=1) is None  # suppressed: only 1 token so far
    stops.delta("a END")
    assert stops.stop_at("a END b", tokens=2) is None  # that END is not a stop any more
    assert stops.stop_at("a END b END", tokens=3) == len("a END b ")
    # One that the min_tokens-th token completes counts.
    late = TextStops(("END",), min_tokens=2)
    assert late.stop_at("a EN", tokens=1) is None
    assert late.stop_at("a END", tokens=2) == 2


# --- the engine over a scripted model: choices, tool calls, failures ------------------


def _byte_tokenizer():
    """One token per byte (GPT-2's byte symbols), and <|im_end|> as the stop token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from export.runtime.logprobs import bytes_to_unicode

    vocab = {c: b for b, c in bytes_to_unicode().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|im_end|>"])  # id 256
    return tokenizer


class ScriptedModel:
    """The ONNX session's shapes; every row's logits point at the script's next token
    (the same for every row), or a run raises."""

    def __init__(self, script: list[int], fail_at_run: int | None = None) -> None:
        self.script, self.fail_at_run, self.runs = list(script), fail_at_run, 0

    def get_inputs(self):
        class Input:
            name, shape = "past_key_values.0.key", ["batch", 1, "past", 2]

        return [Input()]

    def run(self, outputs, feeds, options):
        self.runs += 1
        if self.runs - 1 == self.fail_at_run:
            raise RuntimeError("scripted failure")
        rows, new = feeds["input_ids"].shape
        past = feeds["past_key_values.0.key"].shape[2]
        logits = np.zeros((rows, new, 257), dtype=np.float32)
        logits[:, -1, self.script.pop(0) if len(self.script) > 1 else self.script[0]] = 5.0
        return [logits, *[np.zeros((rows, 1, past + new, 2), np.float32)] * 2]


SCRIPT_META = {
    "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    "special_tokens": {"eos_token": "<|im_end|>"},
    "stop_token_ids": [256],
    "num_layers": 1,
}


@pytest.fixture
def scripted_dir(tmp_path):
    import json

    _byte_tokenizer().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "chat.json").write_text(json.dumps(SCRIPT_META))
    return tmp_path


@pytest.fixture
def scripted(scripted_dir):
    from export.runtime.generation import ChatEngine, Limits

    tokenizer = _byte_tokenizer()
    engines = []

    def start(
        text: str,
        fail_at_run: int | None = None,
        limits: Limits | None = None,
        run: bool = True,
        engine_class: type = ChatEngine,
    ) -> ChatEngine:
        script = [*tokenizer.encode(text).ids, 256]
        model = ScriptedModel(script, fail_at_run)
        engine = engine_class(scripted_dir, limits or Limits(slots=4), session=model)
        engines.append(engine.start() if run else engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


class Recorder:
    """Every event in order (the Collector keeps only their sum)."""

    def __init__(self) -> None:
        import threading

        self.events: list[tuple] = []
        self.done = threading.Event()

    def admitted(self, prompt_tokens, prompt_logprobs):
        self.events.append(("admitted", prompt_tokens))

    def token(self, index, token_id, text, completion_tokens, logprobs):
        self.events.append(("token", index, text))

    def finish(self, index, reason, text, completion_tokens, tool_calls, last):
        self.events.append(("finish", index, reason, text, tool_calls, last))
        if last:
            self.done.set()

    def fail(self, error):
        self.events.append(("fail", error.code))
        self.done.set()

    def cancelled(self):
        return False


WEATHER = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]


def test_a_tool_call_is_held_back_parsed_and_ends_the_choice_with_tool_calls(scripted):
    from export.runtime.generation import ToolUse

    call = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    engine = scripted("Sure. " + call)
    sink = Recorder()
    engine.submit([1, 2], Sampling(max_tokens=200), sink, tools=ToolUse(WEATHER))
    assert sink.done.wait(30)
    streamed = "".join(e[2] for e in sink.events if e[0] == "token")
    assert streamed == "Sure. "  # nothing from the opening on
    (_, index, reason, text, calls, last) = sink.events[-1]
    assert (index, reason, text, last) == (0, "tool_calls", "", True)
    assert [c["function"] for c in calls] == [{"name": "weather", "arguments": '{"city":"Paris"}'}]
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 5 + 24


def test_without_tools_the_same_text_streams_as_content(scripted):
    engine = scripted('Sure. <tool_call>\n{"name": "weather"}')
    sink = Recorder()
    engine.submit([1, 2], Sampling(max_tokens=200), sink)
    assert sink.done.wait(30)
    streamed = "".join(e[2] for e in sink.events if e[0] == "token")
    assert streamed == 'Sure. <tool_call>\n{"name": "weather"}'
    assert sink.events[-1][1:] == (0, "stop", "", None, True)


def test_n_choices_each_finish_and_only_the_last_finish_is_last(scripted):
    engine = scripted("abc")
    sink = Recorder()
    engine.submit([1, 2], Sampling(max_tokens=10, n=3), sink)
    assert sink.done.wait(30)
    assert sink.events[0] == ("admitted", 2)
    finishes = [e for e in sink.events if e[0] == "finish"]
    assert sorted(e[1] for e in finishes) == [0, 1, 2]
    assert [e[5] for e in finishes] == [False, False, True]
    for index in range(3):
        assert "".join(e[2] for e in sink.events if e[0] == "token" and e[1] == index) == "abc"


def test_a_failure_ends_every_choice_with_one_error(scripted):
    engine = scripted("abcdef", fail_at_run=2)  # the prefill and one step succeed
    sink = Recorder()
    engine.submit([1, 2], Sampling(max_tokens=10, n=2), sink)
    assert sink.done.wait(30)
    assert sink.events[-1] == ("fail", "internal")
    assert [e for e in sink.events if e[0] in ("fail", "finish")] == [("fail", "internal")]
    assert not engine.busy


def test_a_request_takes_n_slots_at_admission(scripted):
    from export.runtime.generation import GenerationError, Limits

    engine = scripted("a", limits=Limits(slots=4, queue=2), run=False)  # nothing drains
    engine.submit([1], Sampling(max_tokens=1, n=4), Recorder())
    with pytest.raises(GenerationError) as refused:
        engine.submit([1], Sampling(max_tokens=1, n=3), Recorder())  # 7 > 4 + 2
    assert refused.value.code == "overloaded"
    engine.submit([1], Sampling(max_tokens=1, n=2), Recorder())  # 6: fits
    with pytest.raises(GenerationError) as refused:
        engine.submit([1], Sampling(max_tokens=1, n=5), Recorder())
    assert refused.value.code == "invalid" and "n must be 1..4" in str(refused.value)


def test_one_choice_failing_in_the_loop_ends_its_siblings_too(scripted):
    engine = scripted("abcdefgh")
    engine.fail_on_seed = 9  # each choice of a seed-9 request raises after 3 tokens
    sink, other = Recorder(), Recorder()
    engine.submit([1, 2], Sampling(max_tokens=8, n=2, seed=9), sink)
    engine.submit([1, 2], Sampling(max_tokens=8, seed=1), other)
    assert sink.done.wait(30) and other.done.wait(30)
    assert [e for e in sink.events if e[0] in ("fail", "finish")] == [("fail", "internal")]
    assert len([e for e in sink.events if e[0] == "token"]) == 2 * 3
    assert other.events[-1][0] == "finish"  # the other request went on to its end


def _collected(engine, sampling: Sampling, grammar=None, tools=None):
    from export.runtime.generation import Collector

    sink = Collector()
    engine.submit([1, 2], sampling, sink, grammar=grammar, tools=tools)
    assert sink.done.wait(30)
    return sink


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_bias_that_bans_every_token_fails_the_request_as_invalid(scripted, temperature):
    engine = scripted("abc")
    everything = tuple((t, -100.0) for t in range(257))
    sink = _collected(
        engine, Sampling(max_tokens=5, temperature=temperature, logit_bias=everything)
    )
    assert sink.error is not None and sink.error.code == "invalid"
    assert "logit_bias bans every token" in str(sink.error)
    assert sink.generated_ids == []


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_bias_against_everything_the_grammar_allows_fails_as_invalid(scripted, temperature):
    engine = scripted('{"a": 1}')
    grammar = engine.grammar({"type": "json_object"}, None)
    # A JSON object starts with "{" (no whitespace first): banning it leaves nothing.
    banned = Sampling(max_tokens=5, temperature=temperature, logit_bias=((ord("{"), -100.0),))
    sink = _collected(engine, banned, grammar=grammar)
    assert sink.error is not None and sink.error.code == "invalid"
    assert str(sink.error) == (
        "logit_bias bans every token that response_format / the tool call allows"
    )
    assert not engine.busy


def test_stop_strings_do_not_cut_a_grammar_constrained_answer(scripted):
    answer = '{"a": "x STOP y"}'
    engine = scripted(answer)
    stopped = Sampling(max_tokens=40, stop=("STOP",))
    free = _collected(engine, stopped)
    assert (free.text, free.reason) == ('{"a": "x ', "stop")  # no grammar: cut
    engine = scripted(answer)
    grammar = engine.grammar({"type": "json_object"}, None)
    constrained = _collected(engine, stopped, grammar=grammar)
    assert (constrained.text, constrained.reason) == (answer, "stop")  # the grammar ended it


def test_in_tools_auto_mode_stop_strings_still_apply(scripted):
    from export.runtime.generation import ToolUse

    call = '<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
    engine = scripted("Sure STOP " + call)
    sink = _collected(engine, Sampling(max_tokens=80, stop=("STOP",)), tools=ToolUse(WEATHER))
    assert (sink.text, sink.reason, sink.choices[0].tool_calls) == ("Sure ", "stop", None)


def test_a_grammar_is_compiled_once_per_request_and_each_choice_moves_its_own(
    scripted, monkeypatch
):
    from export.runtime.generation import Collector

    engine = scripted('{"a": 1}', run=False)
    compiled = []
    real = engine.grammars.matcher

    def counted(grammar):
        compiled.append(grammar)
        return real(grammar)

    monkeypatch.setattr(engine.grammars, "matcher", counted)
    grammar = engine.grammar({"type": "json_object"}, None)
    sink = Collector()
    engine.submit([1, 2], Sampling(max_tokens=20, n=3), sink, grammar=grammar)
    assert len(compiled) == 1
    (queued,) = engine._queue
    assert len({id(seq.logits.matcher) for seq in queued.choices}) == 3  # copies
    engine.start()
    assert sink.done.wait(30) and sink.error is None
    assert [sink.choices[i].text for i in range(3)] == ['{"a": 1}'] * 3
    assert all(sink.choices[i].reason == "stop" for i in range(3))


def test_room_is_checked_before_the_grammar_is_compiled(scripted, monkeypatch):
    from export.runtime.generation import GenerationError, Limits

    engine = scripted("a", limits=Limits(slots=1, queue=0), run=False)  # nothing drains
    engine.submit([1], Sampling(max_tokens=1), Recorder())
    compiled = []
    monkeypatch.setattr(engine.grammars, "matcher", lambda g: compiled.append(g))
    grammar = engine.grammar({"type": "json_object"}, None)
    with pytest.raises(GenerationError) as refused:
        engine.submit([1], Sampling(max_tokens=1), Recorder(), grammar=grammar)
    assert refused.value.code == "overloaded" and compiled == []


def test_the_grammar_tokenizer_is_built_with_the_engine_once_per_process(scripted_dir, monkeypatch):
    import llguidance

    from export.runtime import grammar as grammar_module
    from export.runtime.generation import ChatEngine, Limits

    built = []
    real = llguidance.LLTokenizer

    def counted(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(grammar_module, "_TOKENIZERS", {})
    monkeypatch.setattr(llguidance, "LLTokenizer", counted)
    first = ChatEngine(scripted_dir, Limits(slots=2), session=ScriptedModel([256]))
    assert built == [1]  # before any request
    second = ChatEngine(scripted_dir, Limits(slots=2), session=ScriptedModel([256]))
    assert built == [1] and second.grammars.tokenizer() is first.grammars.tokenizer()


# --- the Triton model's side: its inputs and responses ---------------------------------


class FakePb:
    TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

    class Tensor:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def as_numpy(self):
            return self.value

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.output_tensors, self.error = output_tensors, error

    class TritonError:
        INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

        def __init__(self, message, code=None):
            self.message, self.code = message, code

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return request.get(name)


def _inputs(**values) -> dict:
    def tensor(name, value):
        if isinstance(value, str):
            array = np.array([value.encode()], dtype=np.object_)
        elif isinstance(value, bool):
            array = np.array([value])
        elif isinstance(value, float):
            array = np.array([value], dtype=np.float32)
        else:
            array = np.array(value if isinstance(value, list) else [value])
        return FakePb.Tensor(name, array)

    return {name: tensor(name, value) for name, value in values.items()}


@pytest.fixture
def triton_side(scripted):
    from export.runtime import chat_model

    return chat_model, scripted("ab", engine_class=chat_model.ChatEngine, run=False)


def test_every_new_input_reaches_the_sampling(triton_side):
    chat_model, engine = triton_side
    parsed = chat_model.parse_request(
        FakePb,
        _inputs(
            PROMPT_IDS=[5, 6, 7],
            MAX_TOKENS=6,
            N=2,
            LOGPROBS=3,
            PROMPT_LOGPROBS=0,
            PRESENCE_PENALTY=0.5,
            FREQUENCY_PENALTY=-0.5,
            REPETITION_PENALTY=1.25,
            LOGIT_BIAS='{"7": -100, "3": 2.5}',
            MIN_TOKENS=2,
            IGNORE_EOS=True,
        ),
        engine,
    )
    assert parsed.prompt_ids == [5, 6, 7] and parsed.grammar is None and parsed.tools is None
    s = parsed.sampling
    assert (s.max_tokens, s.n, s.logprobs, s.prompt_logprobs) == (6, 2, 3, 0)
    assert (s.presence_penalty, s.frequency_penalty, s.repetition_penalty) == (0.5, -0.5, 1.25)
    assert s.logit_bias == ((3, 2.5), (7, -100.0)) and (s.min_tokens, s.ignore_eos) == (2, True)
    neutral = chat_model.parse_request(FakePb, _inputs(PROMPT="hi", LOGPROBS=-1), engine)
    assert neutral.sampling == chat_model.Sampling(max_tokens=neutral.sampling.max_tokens)


def test_tools_parse_into_a_tool_use_and_required_takes_a_grammar(triton_side):
    import json

    chat_model, engine = triton_side
    messages = json.dumps([{"role": "user", "content": "weather?"}])
    tools = json.dumps(WEATHER)
    auto = chat_model.parse_request(FakePb, _inputs(MESSAGES=messages, TOOLS=tools), engine)
    assert auto.tools is not None and auto.tools.choice == "auto" and auto.grammar is None
    required = chat_model.parse_request(
        FakePb,
        _inputs(
            MESSAGES=messages, TOOLS=tools, TOOL_CHOICE='"required"', PARALLEL_TOOL_CALLS=False
        ),
        engine,
    )
    assert required.tools is not None and required.tools.parallel is False
    assert required.grammar is not None and "weather" in required.grammar.text
    off = chat_model.parse_request(
        FakePb, _inputs(MESSAGES=messages, TOOLS=tools, TOOL_CHOICE='"none"'), engine
    )
    assert off.tools is None


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"PROMPT": "hi", "LOGIT_BIAS": "[1]"}, "LOGIT_BIAS"),
        ({"PROMPT": "hi", "LOGIT_BIAS": '{"x": 1}'}, "LOGIT_BIAS"),
        ({"PROMPT": "hi", "LOGIT_BIAS": "{"}, "LOGIT_BIAS"),
        # Keys int() would take, but not plain decimal ids: one id, one spelling.
        ({"PROMPT": "hi", "LOGIT_BIAS": '{"012": 1}'}, "LOGIT_BIAS: '012'"),
        ({"PROMPT": "hi", "LOGIT_BIAS": '{"1_0": 1}'}, "LOGIT_BIAS: '1_0'"),
        ({"PROMPT": "hi", "LOGIT_BIAS": '{"\u0661": 1}'}, "is not a token id"),
        ({"PROMPT": "hi", "LOGIT_BIAS": '{" 7": 1}'}, "is not a token id"),
        ({"PROMPT": "hi", "LOGIT_BIAS": '{"+7": 1}'}, "is not a token id"),
        ({"PROMPT": "hi", "LOGIT_BIAS": '{"7": 1, "7": -1}'}, "token 7 is given twice"),
        ({"PROMPT": "hi", "LOGPROBS": -2}, "LOGPROBS"),
        ({"PROMPT": "hi", "N": [1, 2]}, "N"),
        ({"PROMPT": "hi", "PRESENCE_PENALTY": float("nan")}, "PRESENCE_PENALTY"),
        ({"PROMPT": "hi", "RESPONSE_FORMAT": '"json"'}, "RESPONSE_FORMAT"),
        ({"PROMPT": "hi", "PROMPT_IDS": [1]}, "PROMPT_IDS"),
        ({"PROMPT_IDS": [1, 999]}, "PROMPT_IDS"),
        ({"PROMPT": "hi", "TOOLS": "[]"}, "tools"),
    ],
)
def test_a_bad_input_is_refused_naming_it(triton_side, values, named):
    chat_model, engine = triton_side
    with pytest.raises(chat_model.GenerationError) as refused:
        chat_model.parse_request(FakePb, _inputs(**values), engine)
    assert refused.value.code == "invalid" and named in str(refused.value)


def test_a_stop_sequence_that_is_not_utf8_is_refused_naming_stop(triton_side):
    chat_model, engine = triton_side
    request = _inputs(PROMPT="hi")
    request["STOP"] = FakePb.Tensor("STOP", np.array([b"ok", b"\xff\xfe"], dtype=np.object_))
    with pytest.raises(chat_model.GenerationError) as refused:
        chat_model.parse_request(FakePb, request, engine)
    assert refused.value.code == "invalid" and str(refused.value) == "STOP is not valid UTF-8"
    request["STOP"] = FakePb.Tensor("STOP", np.array(["é".encode(), b"b"], dtype=np.object_))
    assert chat_model.parse_request(FakePb, request, engine).sampling.stop == ("é", "b")


def test_every_response_carries_index_logprobs_and_tool_calls_and_final_ends_the_last(
    triton_side,
):
    import json
    import threading

    chat_model, engine = triton_side
    engine.start()

    class Sender:
        def __init__(self):
            self.sent, self.final = [], threading.Event()

        def send(self, response, flags=0):
            self.sent.append((response, flags))
            if flags:
                self.final.set()

        def is_cancelled(self):
            return False

    sender = Sender()
    sampling = chat_model.Sampling(max_tokens=1, n=2, logprobs=1, prompt_logprobs=0)
    engine.submit([97, 98], sampling, chat_model.ResponseSink(FakePb, sender))
    assert sender.final.wait(30)
    rows = []
    for response, flags in sender.sent:
        values = {t.name: t.value[0] for t in response.output_tensors}
        assert set(values) == {t.name for t in CHAT_OUTPUTS}
        rows.append((values, flags))
    admission, *rest = rows
    assert admission[0]["INDEX"] == 0 and admission[0]["PROMPT_TOKENS"] == 2
    prompt = json.loads(admission[0]["TOKEN_LOGPROBS"])
    assert [e["id"] for e in prompt] == [97, 98] and prompt[0]["logprob"] is None
    tokens = [v for v, _ in rest if not v["FINISH_REASON"]]
    assert sorted(v["INDEX"] for v in tokens) == [0, 1]
    assert all(len(json.loads(v["TOKEN_LOGPROBS"])) == 1 for v in tokens)
    ends = [(v, f) for v, f in rest if v["FINISH_REASON"]]
    assert [f for _, f in ends] == [0, FakePb.TRITONSERVER_RESPONSE_COMPLETE_FINAL]
    assert all(v["TOOL_CALLS"] == b"" and v["TOKEN_LOGPROBS"] == b"" for v, _ in ends)
