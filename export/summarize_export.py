"""The `summarize` model (kind "summarizer"): no weights of its own; it runs on the served
`embed` (extractive) and `chat` (abstractive) models through BLS
(export/runtime/summarize_model.py, summarize_pipeline.py).

Its artifact is summarize.json: the prompt, the defaults and the methods. The prompt is
written here, in the builder module, on purpose: this file keys the artifact, so a
changed prompt is a new artifact (and a new sha256 on the card); the runtime reads it
from summarize.json. The export-time check runs the extractive method through the
runner's own pipeline class on fixed texts, over the real embed model (its cached
artifact, or model_repository/embed/1), against centrality computed here with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from . import sources
from .cache import file_sha256
from .catalog import CHAT, EMBED
from .served import ServedSpec
from .spec import TEXT_INPUT, Target, TensorSpec, core_output
from .triton_config import read_config, runner_params, served_python_config

ARTIFACT_FILES = ("summarize.json", "facts.json")
RUNTIME = "summarize_model.py"
RUNTIME_MODULES = (
    "batch_model.py",
    "sentences.py",
    "summarize_chunks.py",
    "summarize_extractive.py",
    "summarize_pipeline.py",
    "summarize_prompt.py",
    "summarize_scheduler.py",
    "summarize_settings.py",
)
SOURCE_PACKAGES: tuple[str, ...] = ()

METHODS = ["extractive", "abstractive"]
# The instructions sent to `chat` (summarize_prompt.summary_messages). Chosen on
# SmolLM2-135M-Instruct, greedy: asked for "two or three sentences" and "only facts from
# the text" it keeps to the text's own facts more than with a bare "summarize" (tried on
# a news item, an explanation and a review).
PROMPT = {
    "system": "You are a helpful assistant that summarizes texts accurately and concisely.",
    "whole": "Summarize the following text in two or three sentences. Use only facts from "
    "the text.\n\n{text}",
    "part": "This is one part of a longer text. Summarize it in two or three sentences. Use "
    "only facts from the text.\n\n{text}",
    "combine": "These are summaries of consecutive parts of one text. Combine them into one "
    "summary of two or three sentences. Use only facts from the summaries.\n\n{text}",
}
DEFAULT_METHOD = "extractive"
DEFAULT_MAX_SENTENCES = 3
DEFAULT_MAX_TOKENS = 128
MAX_SENTENCES_LIMIT = 50

SUMMARIZE_INPUTS = (
    TensorSpec("METHOD", "TYPE_STRING", (1,)),
    TensorSpec("MAX_SENTENCES", "TYPE_INT32", (1,)),
    TensorSpec("MAX_TOKENS", "TYPE_INT32", (1,)),
)
SUMMARIZE_OUTPUTS = (
    TensorSpec("SUMMARY", "TYPE_STRING", (1,)),
    TensorSpec("METHOD", "TYPE_STRING", (1,)),
    TensorSpec("SENTENCES", "TYPE_STRING", (1,)),
    TensorSpec("SOURCE_SENTENCES", "TYPE_INT32", (1,)),
    TensorSpec("CHUNKS", "TYPE_INT32", (1,)),
    TensorSpec("NUM_TOKENS", "TYPE_INT32", (1,)),
)

# The export-time check's texts: prose of several kinds, with abbreviations, decimals,
# quotes, paragraphs and a list, each longer than the sentences asked for.
CHECK_TEXTS = (
    "The city council voted on Tuesday to expand the bus network. Twelve new routes will "
    "connect the northern suburbs to the centre. The plan costs 40.5 million dollars over "
    "five years. It is funded partly by a new parking levy. Supporters said the new bus "
    "routes would cut commuting times. Opponents said the levy would hurt shops.",
    "Photosynthesis turns light into chemical energy. Chlorophyll absorbs mostly red and "
    "blue light. The energy splits water, releasing oxygen. Plants turn carbon dioxide into "
    "glucose with that energy. Almost all life depends on photosynthesis for food and "
    "oxygen.",
    "I bought these headphones for my commute. The noise cancelling is excellent on trains. "
    "The battery lasts a week. However, the ear cushions get warm after an hour. The app "
    'keeps asking me to "create an account." Overall, the headphones are a good deal.',
    "Dr. Rivera joined the U.S. team in 2019. She studies glaciers in Greenland.\n\n"
    "Her team measured how fast the glaciers melt. The melting glaciers raise sea levels "
    "by 0.7 mm a year. Glaciers in Greenland are melting faster than ten years ago.",
    "To bake bread, mix flour, water, salt and yeast. Knead the dough for ten minutes. Let "
    "the dough rise for an hour. Shape the dough into a loaf. Bake the loaf at 220 degrees "
    "for 35 minutes. Let the bread cool before slicing it.",
    "The match ended in a 2-2 draw. The home team scored twice in the first half. The "
    "visitors equalised late in the second half! Fans praised the visitors' late comeback. "
    "The draw keeps both teams in the top four of the league.",
)
# Splitter cases: (text, its sentences). Checked at export and in the unit tests.
SPLITTER_CASES = (
    (
        "Mr. Smith went to Washington. He arrived at 5 p.m. on Friday.",
        ["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Friday."],
    ),
    (
        "It grew 3.5% in 2023. Analysts, e.g. Jane Doe, expected it... Really? Yes!",
        ["It grew 3.5% in 2023.", "Analysts, e.g. Jane Doe, expected it...", "Really?", "Yes!"],
    ),
    (
        'She said, "It\'s over." Then she left. "Why?" he asked.',
        ['She said, "It\'s over."', "Then she left.", '"Why?" he asked.'],
    ),
    ("今天天气很好。我们去公园吧！你呢？", ["今天天气很好。", "我们去公园吧！", "你呢？"]),
    (
        "I love it! 😍 Highly recommend.\n\nNew paragraph",
        ["I love it! 😍", "Highly recommend.", "New paragraph"],
    ),
    (
        "He was born in the U.S. He moved to Paris. The U.S. Army was there.",
        ["He was born in the U.S.", "He moved to Paris.", "The U.S. Army was there."],
    ),
)


def document(spec: ServedSpec) -> dict[str, Any]:
    """summarize.json: what the runner reads (the prompt) and what the card shows."""
    return {
        "prompt": PROMPT,
        "methods": METHODS,
        "defaults": {
            "method": DEFAULT_METHOD,
            "max_sentences": int(spec.option("default_max_sentences", str(DEFAULT_MAX_SENTENCES))),
            "max_tokens": int(spec.option("default_max_tokens", str(DEFAULT_MAX_TOKENS))),
        },
        "max_sentences_limit": MAX_SENTENCES_LIMIT,
        "map_reduce": {
            "chunk_tokens": int(spec.option("chunk_tokens", "768")),
            "partial_tokens": int(spec.option("partial_tokens", "96")),
        },
        "max_chars": int(spec.option("max_chars", "20000")),
        "centrality": "mean cosine similarity of a sentence's embed vector to the other "
        "sentences of its text",
    }


def summarize_params(spec: ServedSpec, facts: dict[str, Any]) -> dict[str, str]:
    """What the runner reads from its config: the build's defaults (facts), the chat
    model's limits as served now (not part of the artifact), the callees' names."""
    doc = facts["document"]
    serving = CHAT.serving
    return {
        "embed_model": EMBED.name,
        "chat_model": CHAT.name,
        "chat_version": "1",
        "default_method": doc["defaults"]["method"],
        "default_max_sentences": str(doc["defaults"]["max_sentences"]),
        "default_max_tokens": str(doc["defaults"]["max_tokens"]),
        "max_sentences_limit": str(doc["max_sentences_limit"]),
        "max_completion_tokens": str(serving.max_completion_tokens),
        "max_prompt_tokens": str(serving.max_prompt_tokens),
        "chunk_tokens": str(doc["map_reduce"]["chunk_tokens"]),
        "partial_tokens": str(doc["map_reduce"]["partial_tokens"]),
        "prompt_margin_tokens": "16",
        # Chat streams open at once per instance: 1, each read to its end before the next
        # starts. With 4 interleaved, Triton 2.51's python backend crashed the instance
        # (a reference-count error on the string outputs) in 3 of 6 batched runs, and a
        # crashed stub is never restarted; 20 of 20 ran clean with 1, ~1.5x slower.
        "concurrency": spec.option("concurrency", "1"),
        "embed_rows": spec.option("embed_rows", "64"),
        "max_chars": str(doc["max_chars"]),
    }


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    from .runtime.summarize_prompt import Prompt

    doc = document(spec)
    path = out_dir / "summarize.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    Prompt.from_json(doc["prompt"])  # refuses a template without its one {text}
    facts: dict[str, Any] = {
        "labels": [],
        "document": doc,
        "methods": METHODS,
        "sources": _sources(),
        "artifact": {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size},
        "onnx_io": {"inputs": {}, "outputs": {}},
    }
    bar.set_postfix_str(f"{spec.name}: splitter + extractive check")
    quality = splitter_check()
    embed_dir = find_embed_dir()
    if embed_dir is None:
        facts["quality"] = {}
        facts["quality_note"] = (
            "not measured: no embed model to run the extractive check on (build `embed` "
            "first, then rebuild summarize with --force)"
        )
        return facts
    quality.update(extractive_check(spec, facts, embed_dir))
    facts["quality"] = quality
    return facts


def splitter_check() -> dict[str, Any]:
    from .runtime.sentences import split_sentences

    for text, expected in SPLITTER_CASES:
        got = [text[a:b] for a, b in split_sentences(text)]
        if got != expected:
            raise RuntimeError(f"sentence splitter: {text!r} gave {got}, expected {expected}")
    return {"splitter_cases": len(SPLITTER_CASES), "splitter_exact": 1.0}


def find_embed_dir() -> Path | None:
    """The embed model this build serves: its cached artifact, else the repository's."""
    from .build import _artifact_dir

    root = Path(__file__).resolve().parents[1]
    for folder in (_artifact_dir(EMBED, 1), root / "model_repository" / EMBED.name / "1"):
        if (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file():
            return folder
    return None


def embed_pipeline(embed_dir: Path) -> Any:
    """The embed model's own runner (TextPipeline) with the params it is served with."""
    from .runtime.text_model import TextPipeline

    config = embed_dir.parent / "config.pbtxt"
    if config.is_file():
        text_params = {k: v.string_value for k, v in read_config(config).parameters.items()}
    else:  # the cached artifact: the params the build writes for it
        out = core_output(EMBED.task, 384, "none")
        text_params = runner_params(EMBED, out, "none", threads=1)
    return TextPipeline(embed_dir, text_params)


def extractive_check(spec: ServedSpec, facts: dict[str, Any], embed_dir: Path) -> dict:
    """SummarizePipeline (extractive) against numpy centrality over the same sentences'
    embed vectors; raises on any difference."""
    from .runtime.batch_model import ignore_cancel
    from .runtime.sentences import split_sentences
    from .runtime.summarize_pipeline import SummarizePipeline
    from .runtime.summarize_prompt import Prompt
    from .runtime.summarize_settings import Options

    text_pipeline = embed_pipeline(embed_dir)

    def embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = text_pipeline.run(texts)
        return out["EMBEDDING"], out["NUM_TOKENS"].reshape(-1)

    def no_chat(messages: Any, max_tokens: int) -> Any:
        raise AssertionError("the extractive check calls no chat model")

    pipeline = SummarizePipeline(
        summarize_params(spec, facts),
        embed,
        no_chat,
        prompt=Prompt.from_json(facts["document"]["prompt"]),
    )
    k = 2
    items = [(t, Options("extractive", k, 1)) for t in CHECK_TEXTS]
    out = pipeline.run(items, ignore_cancel())
    ratios = []
    for row, text in enumerate(CHECK_TEXTS):
        spans = split_sentences(text)
        vectors = embed([text[a:b] for a, b in spans])[0].astype(np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sims = vectors @ vectors.T
        scores = (sims.sum(axis=1) - np.diag(sims)) / (len(spans) - 1)
        expected = sorted(np.argsort(-scores, kind="stable")[:k].tolist())
        chosen = json.loads(out["SENTENCES"][row, 0])
        summary = out["SUMMARY"][row, 0].decode("utf-8")
        if [c["index"] for c in chosen] != expected:
            raise RuntimeError(f"extractive check: text {row} chose {chosen}, expected {expected}")
        if summary != " ".join(text[c["start"] : c["end"]] for c in chosen):
            raise RuntimeError(f"extractive check: text {row}: the summary is not verbatim")
        ratios.append(len(summary) / len(text))
    return {
        "extractive_check_texts": len(CHECK_TEXTS),
        "extractive_reference_agreement": 1.0,
        "extractive_mean_compression": round(float(np.mean(ratios)), 3),
    }


def _sources() -> list[dict[str, str]]:
    """The distributions the two models' weights come from (installed at export)."""
    names = (EMBED.encoder.package.replace("_", "-"), CHAT.package.replace("_", "-"))
    return [sources.distribution_facts(name) for name in names]


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    """Python backend on CPU instances for both targets: the models it calls run where
    they are served (the gpu target's embed core, chat's provider)."""
    return served_python_config(
        spec,
        (TEXT_INPUT,),
        SUMMARIZE_OUTPUTS,
        summarize_params(spec, facts),
        optional=SUMMARIZE_INPUTS,
    )


def extra_configs(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> dict:
    return {}


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    doc = facts["document"]
    serving = CHAT.serving
    chunk = doc["map_reduce"]["chunk_tokens"]
    defaults = doc["defaults"]
    return {
        "truncation": f"none: texts over {doc['max_chars']} characters are refused (REST: "
        "422 validation_error; Triton gRPC: INVALID_ARGUMENT). "
        "extractive embeds every sentence (a sentence over 256 tokens is read to its first "
        "256). abstractive: a text over about "
        f"{chunk} tokens is summarized in chunks of whole sentences, then the chunk summaries "
        "are summarized (map-reduce; CHUNKS says how many); max_tokens 1.."
        f"{serving.max_completion_tokens}",
        "methods": list(facts["methods"]),
        "score_kind": None,
        "score_meaning": None,
        "triton_io": {
            "inputs": {
                "TEXT": "BYTES [batch, 1], UTF-8",
                "METHOD": f"BYTES [batch, 1], optional: {' | '.join(METHODS)} "
                f"(default {defaults['method']})",
                "MAX_SENTENCES": f"INT32 [batch, 1], optional: 1..{doc['max_sentences_limit']} "
                f"(extractive, default {defaults['max_sentences']})",
                "MAX_TOKENS": f"INT32 [batch, 1], optional: 1..{serving.max_completion_tokens} "
                f"(abstractive, default {defaults['max_tokens']})",
            },
            "outputs": [t.name for t in SUMMARIZE_OUTPUTS],
            "decoupled": False,
        },
    }
