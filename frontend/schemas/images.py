"""POST /v1/models/{model}/predict for image-classification models (imagenet): JSON with
base64 images, or multipart/form-data with the files themselves."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import Integer, Strict
from .predict import LabelScore

# A 16 x 16 orange PNG (the smallest side the image models take), as examples send it.
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR42mM4UaFBEmIY1TCqYfhqAAADaGgQ4a3ZQQ"
    "AAAABJRU5ErkJggg=="
)


class ImageRequest(Strict):
    inputs: str | list[str] = Field(
        description="One image, or a list of images sent as one batch: each the file's "
        "bytes (JPEG, PNG, WebP or GIF) in standard base64 (RFC 4648, padded), optionally "
        "as a data: URL (data:image/png;base64,...).",
        examples=[EXAMPLE_PNG],
    )
    top_k: Integer = Field(5, ge=1, description="How many labels to return per image, best first.")

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"inputs": [EXAMPLE_PNG], "top_k": 5}]},
    )


class ImageUpload(BaseModel):
    """multipart/form-data: the images as `file` parts (repeat the field for several)."""

    model_config = ConfigDict(extra="forbid")

    file: list[bytes] = Field(
        description="An image file (JPEG, PNG, WebP or GIF); repeat the field for several.",
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
    )
    top_k: Integer = Field(5, ge=1, description="How many labels to return per image, best first.")


class ImagePrediction(BaseModel):
    file: str | None = Field(None, description="The part's file name (multipart requests only).")
    label: str
    score: float = Field(description="The label's softmax probability.")
    top_k: list[LabelScore]
    width: int = Field(description="Width in pixels, as decoded (after EXIF orientation).")
    height: int = Field(description="Height in pixels, as decoded (after EXIF orientation).")


class ImageUsage(BaseModel):
    images: int


class ImagesResponse(BaseModel):
    model: str
    version: str
    task: Literal["image-classification"]
    predictions: list[ImagePrediction]
    usage: ImageUsage
