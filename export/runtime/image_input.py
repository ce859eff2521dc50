"""Encoded image bytes -> the classifier's input array, or an ItemError naming the item.

Copied beside the `imagenet` model's model.py (imported flat there; unit tests import it
as `export.runtime.image_input`). Plain Python + Pillow + numpy, no Triton.

What is accepted and how it is read (each step says why):
- Formats: JPEG, PNG, WebP, GIF, told apart by their signature bytes before Pillow sees
  them, and Pillow is asked to try only that one plugin: the other ~40 file parsers never
  run on caller data, and a TIFF or HEIC is refused with its name.
- Limits, in this order and all before any pixel is decoded: the byte size
  (`max_image_bytes`); the pixel count width x height from the header (`max_image_pixels`;
  `Image.open` reads only the header), so a small file that claims 30000 x 30000 is
  refused without allocating it; the shorter side (`min_image_side`: a centre crop of a
  smaller image would be upsampled into a blur the model cannot classify, and 1 x 1 is
  what broken thumbnails and tracking pixels are). Pillow's own decompression-bomb guard
  (`Image.MAX_IMAGE_PIXELS`) is set to the same cap on every call, not at import: it also
  covers sizes that only appear while decoding (GIF frames larger than the screen).
- Full decode (`load()`), so a truncated or corrupt file fails here, in its own request,
  not later in the batch. PNG chunk checksums are verified first (Pillow's decoder alone
  does not check the IDAT chunks' CRCs, so flipped bytes could decode into garbage).
- Animated GIF / PNG / WebP: the first frame only (the others are never decoded).
- EXIF orientation is applied, and WIDTH / HEIGHT are the size after it (what a viewer
  shows). Unreadable EXIF is ignored: the image is taken as stored.
- Colour: to 8-bit RGB. Greyscale and bilevel are replicated to three channels. CMYK
  (JPEG) by Pillow's plain formula, ICC profiles are not applied (ImageNet models were
  trained on pixels as stored). 16-bit greyscale (I;16*, and I from 16-bit PNGs) is
  scaled by 255/65535 with rounding, not clipped (Pillow's own convert("L") clips every
  value above 255 to white). Alpha (RGBA, LA, PA, and palette images with a transparent
  entry, read through RGBA) is composited over white: transparent areas of logos and
  cut-out product photos are meant to be seen on a light page, and dropping alpha would
  show whatever colour the transparent pixels happen to store (often black).
- Geometry: EfficientNet's own eval transform. The centre square whose side is
  `crop_fraction` (0.875 = 224/256) of the shorter side is resampled to
  `image_size` x `image_size` with bicubic filtering (Pillow, antialiased) in one step.
  That is TensorFlow's EfficientNet eval crop (CROP_PADDING 32) and timm's
  Resize(256) + CenterCrop(224), without the intermediate rounding. The edges of a
  non-square image are not seen.
- Values: (x - 127) / 128 per channel (EfficientNet-Lite's MEAN_RGB / STDDEV_RGB), float32,
  channels first: [3, image_size, image_size].
- The hf-image-classifier kind passes its own `preprocess` (image_pipeline.HfSteps: what
  the directory's preprocessor_config.json declares) in place of the last two steps.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from .batch_model import ItemError
except ImportError:  # copied flat into the model repository
    from batch_model import ItemError  # type: ignore[no-redef]

MEAN = 127.0
STD = 128.0
ACCEPTED = "JPEG, PNG, WebP or GIF"


@dataclass(frozen=True)
class ImageLimits:
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 16
    image_size: int = 224
    crop_fraction: float = 0.875

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ImageLimits:
        base = cls()
        return cls(
            max_image_bytes=int(params.get("max_image_bytes", base.max_image_bytes)),
            max_image_pixels=int(params.get("max_image_pixels", base.max_image_pixels)),
            min_image_side=int(params.get("min_image_side", base.min_image_side)),
            image_size=int(params.get("image_size", base.image_size)),
            crop_fraction=float(params.get("crop_fraction", base.crop_fraction)),
        )

    def as_params(self) -> dict[str, str]:
        return {
            "max_image_bytes": str(self.max_image_bytes),
            "max_image_pixels": str(self.max_image_pixels),
            "min_image_side": str(self.min_image_side),
            "image_size": str(self.image_size),
            "crop_fraction": str(self.crop_fraction),
        }


@dataclass(frozen=True)
class DecodedImage:
    array: np.ndarray  # float32 [3, height, width] (image_size square for imagenet)
    width: int  # as decoded, after EXIF orientation
    height: int


# Pillow format name for each accepted signature.
def _accepted_format(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


_OTHER_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "Photoshop (PSD)"),
    (b"%PDF", 0, "PDF"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL"),
    (b"qoif", 0, "QOI"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}
_BASE64 = re.compile(rb"^[A-Za-z0-9+/=\s]+$")


def _describe_other(data: bytes) -> str:
    """What an unaccepted input looks like, for the error message."""
    for magic, at, name in _OTHER_SIGNATURES:
        if data[at : at + len(magic)] == magic:
            return f"it looks like a {name} file"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return f"it looks like an {_HEIF_BRANDS[data[8:12]]} file"
    head = data[:512]
    # A client that sent the base64 text instead of the bytes: say so, it is the usual
    # mistake (the REST API takes base64; the Triton tensor takes the raw bytes).
    if _BASE64.match(head) and head.lstrip()[:4] in (b"/9j/", b"iVBO", b"R0lG", b"UklG"):
        return "it looks like base64 text; send the decoded bytes"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        if text.lstrip().lower().startswith(("<svg", "<?xml")):
            return "it looks like SVG/XML text"
        return "the data is text"
    return f"unrecognised data starting {data[:8].hex()}"


def decode_image(
    data: bytes,
    where: str,
    limits: ImageLimits,
    preprocess: Callable[[Any], np.ndarray] | None = None,
) -> DecodedImage:
    """One encoded image -> DecodedImage; ItemError (message starts with `where`) for
    anything refused. Never lets a Pillow exception out. `preprocess` (RGB image -> array)
    replaces the imagenet geometry and values."""
    rgb = decode_rgb(data, where, limits)
    array = _preprocess(rgb, limits) if preprocess is None else preprocess(rgb)
    return DecodedImage(array, rgb.width, rgb.height)


def decode_rgb(data: bytes, where: str, limits: ImageLimits) -> Any:
    """One encoded image -> the oriented 8-bit RGB Pillow image (before any resize): what
    the export-time checks hand to the reference preprocessing."""
    from PIL import Image

    if not data:
        raise ItemError(f"{where} is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise ItemError(
            f"{where}: {len(data)} bytes is over the limit of {limits.max_image_bytes} bytes"
        )
    fmt = _accepted_format(data)
    if fmt is None:
        raise ItemError(f"{where}: not a {ACCEPTED} image ({_describe_other(data)})")
    name = "WebP" if fmt == "WEBP" else fmt
    # Pillow's guard, per call: the same cap as ours (it raises above twice its value,
    # warns above it; we refuse above it ourselves, from the header, just below).
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        # Pillow's warnings are about the caller's file (a size between our cap and twice
        # it, which we refuse below; corrupt EXIF), not for the server log.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = img.size
            _check_size(width, height, where, limits)
            if fmt == "PNG":
                img.verify()  # every chunk's CRC; verify() uses the file up, so reopen
                img = Image.open(io.BytesIO(data), formats=[fmt])
            img.load()  # the full decode: truncation and corruption show up here
    except ItemError:
        raise
    except Image.DecompressionBombError as exc:
        raise ItemError(_bomb_message(str(exc), where, limits)) from None
    except Image.UnidentifiedImageError:  # the signature matched, the header did not parse
        raise ItemError(f"{where}: the {name} header is corrupt or unreadable") from None
    except Exception as exc:  # any decoder failure is the caller's file, not our bug
        raise ItemError(
            f"{where}: the {name} data is truncated or corrupt ({_reason(exc)})"
        ) from None
    try:
        rgb = _oriented_rgb(img)
    except ItemError as exc:
        raise ItemError(f"{where}: {exc}") from None
    except Exception as exc:
        raise ItemError(
            f"{where}: the {name} image could not be converted ({_reason(exc)})"
        ) from None
    return rgb


def _check_size(width: int, height: int, where: str, limits: ImageLimits) -> None:
    pixels = width * height
    if pixels > limits.max_image_pixels:
        raise ItemError(
            f"{where}: {width}x{height} = {pixels} pixels is over the limit of "
            f"{limits.max_image_pixels} pixels (checked from the header, before decoding)"
        )
    if min(width, height) < limits.min_image_side:
        raise ItemError(
            f"{where}: {width}x{height} pixels is too small (the shorter side must be at "
            f"least {limits.min_image_side} pixels)"
        )


def _bomb_message(pillow_message: str, where: str, limits: ImageLimits) -> str:
    """Pillow refused before we saw the size (far over the cap, or a GIF frame larger
    than its screen); name the count when its message has it."""
    found = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f"{found.group(1)} pixels" if found else "the image"
    return (
        f"{where}: {size} is over the limit of {limits.max_image_pixels} pixels "
        "(checked before decoding)"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:160]


def _oriented_rgb(img: Any) -> Any:
    from PIL import ImageOps

    # Malformed EXIF: the pixels are fine, take them as stored (and keep Pillow's
    # "Corrupt EXIF data" warning out of the server log: it is the caller's file).
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ImageOps.exif_transpose(img, in_place=True)
    return to_rgb(img)


def to_rgb(img: Any) -> Any:
    """Any decoded mode -> 8-bit RGB, as documented at the top of this module."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        return _over_white(img.convert("RGBA"))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _over_white(img.convert("RGBA"))
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img).astype(np.float64)
        # 0..65535 -> 0..255, rounded; "I" from a 16-bit PNG holds the same range.
        grey = np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("1", "L", "P", "CMYK", "YCbCr"):
        return img.convert("RGB")
    raise ItemError(f"pixel mode {mode} is not supported")


def _over_white(rgba: Any) -> Any:
    from PIL import Image

    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def crop_box(width: int, height: int, fraction: float) -> tuple[float, float, float, float]:
    """The centred square, `fraction` of the shorter side, in source pixel coordinates."""
    side = min(width, height) * fraction
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    return (left, top, left + side, top + side)


def _preprocess(rgb: Any, limits: ImageLimits) -> np.ndarray:
    from PIL import Image

    size = limits.image_size
    box = crop_box(rgb.width, rgb.height, limits.crop_fraction)
    square = rgb.resize((size, size), Image.Resampling.BICUBIC, box=box)
    pixels = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(((pixels - MEAN) / STD).transpose(2, 0, 1))
