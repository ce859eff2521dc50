"""The image set of the `imagenet` export-time fidelity check, as encoded bytes.

Offline and deterministic: the sample images scikit-image ships inside its wheel (read as
the files they are, so the check also decodes real-world PNGs and JPEGs), and variants of
two of them written here with Pillow to walk every decode path the runner has: flips,
rotations, crops, JPEG re-encoding at several qualities, WebP, GIF (single and animated),
greyscale, CMYK, palette (with and without a transparent entry), 16-bit greyscale, RGBA,
LA, an EXIF-rotated JPEG, and small and enlarged copies.

scikit-image's other samples (`brain`, `eagle`, `lily`, ...) are fetched from the network
on first use, so they are not here.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# The two photos whose top-1 class is known: the label-order check.
CAT = "chelsea.png"
COFFEE = "coffee.png"

# Files inside skimage/data/ that load offline and are at least 16 px on each side.
SHIPPED = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "chessboard_GRAY.png",
    "chessboard_RGB.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "horse.png",  # RGBA
    "hubble_deep_field.jpg",
    "ihc.png",
    "logo.png",  # RGBA
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "phantom.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
VARIANT_BASES = ("chelsea.png", "coffee.png")


def skimage_data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _save(img: Any, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png(img: Any) -> bytes:
    # Fastest zlib level: the check reads these files, nobody stores them.
    return _save(img, "PNG", compress_level=1)


def _jpeg(quality: int) -> Callable[[Any], bytes]:
    return lambda img: _save(img, "JPEG", quality=quality)


def _transpose(method: Any, fmt: str = "PNG") -> Callable[[Any], bytes]:
    return lambda img: _save(img.transpose(method), fmt)


def _rotate15(img: Any) -> bytes:
    from PIL import Image

    return _png(img.rotate(15, resample=Image.Resampling.BICUBIC, expand=True))


def _crop(fx0: float, fy0: float, fx1: float, fy1: float) -> Callable[[Any], bytes]:
    def crop(img: Any) -> bytes:
        w, h = img.size
        return _png(img.crop((int(w * fx0), int(h * fy0), int(w * fx1), int(h * fy1))))

    return crop


def _scaled(factor: float) -> Callable[[Any], bytes]:
    from PIL import Image

    def scale(img: Any) -> bytes:
        w, h = img.size
        size = (round(w * factor), round(h * factor))
        return _png(img.resize(size, Image.Resampling.LANCZOS))

    return scale


def _cmyk(img: Any) -> bytes:
    return _save(img.convert("CMYK"), "JPEG", quality=92)


def _palette(img: Any) -> bytes:
    return _png(img.quantize(256))


def _palette_transparent(img: Any) -> bytes:
    quantized = img.quantize(64)
    # The corner's palette entry becomes transparent: a real transparent region.
    return _save(quantized, "PNG", compress_level=1, transparency=quantized.getpixel((0, 0)))


def _grey16(img: Any) -> bytes:
    from PIL import Image

    grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
    return _png(Image.fromarray(grey))


def _rgba(img: Any) -> bytes:
    from PIL import Image

    w, h = img.size
    alpha = np.tile(np.linspace(255, 64, w).astype(np.uint8), (h, 1))
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha))
    return _png(rgba)


def _la(img: Any) -> bytes:
    from PIL import Image

    w, h = img.size
    alpha = np.tile(np.linspace(96, 255, h).astype(np.uint8)[:, None], (1, w))
    la = img.convert("LA")
    la.putalpha(Image.fromarray(alpha))
    return _png(la)


def _gif(img: Any) -> bytes:
    return _save(img, "GIF")


def _animated_gif(img: Any) -> bytes:
    from PIL import Image

    frames = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img.convert("L")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def _webp(lossless: bool) -> Callable[[Any], bytes]:
    return lambda img: _save(img, "WEBP", lossless=lossless, quality=80, method=0)


def _exif_rotated(img: Any) -> bytes:
    from PIL import Image

    # Stored turned a quarter to the left with orientation 6 ("turn right to view"),
    # as a phone held upright writes it.
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif)


def _variants() -> tuple[tuple[str, Callable[[Any], bytes]], ...]:
    from PIL import Image

    t = Image.Transpose
    return (
        ("flip_lr.png", _transpose(t.FLIP_LEFT_RIGHT)),
        ("flip_tb.png", _transpose(t.FLIP_TOP_BOTTOM)),
        ("rot90.png", _transpose(t.ROTATE_90)),
        ("rot180.jpg", _transpose(t.ROTATE_180, "JPEG")),
        ("rot270.png", _transpose(t.ROTATE_270)),
        ("rot15.png", _rotate15),
        ("crop_centre.png", _crop(0.2, 0.2, 0.8, 0.8)),
        ("crop_left.png", _crop(0.0, 0.0, 0.6, 1.0)),
        ("strip.png", _crop(0.0, 0.4, 1.0, 0.6)),
        ("q95.jpg", _jpeg(95)),
        ("q75.jpg", _jpeg(75)),
        ("q50.jpg", _jpeg(50)),
        ("q20.jpg", _jpeg(20)),
        ("grey.png", lambda img: _png(img.convert("L"))),
        ("cmyk.jpg", _cmyk),
        ("palette.png", _palette),
        ("palette_transparent.png", _palette_transparent),
        ("grey16.png", _grey16),
        ("rgba.png", _rgba),
        ("la.png", _la),
        ("lossy.webp", _webp(False)),
        ("lossless.webp", _webp(True)),
        ("single.gif", _gif),
        ("animated.gif", _animated_gif),
        ("exif6.jpg", _exif_rotated),
        ("small.png", _scaled(0.15)),
        ("large.png", _scaled(2.0)),
    )


def fidelity_images() -> list[tuple[str, bytes]]:
    """(name, encoded bytes), always the same list in the same order."""
    from PIL import Image

    data_dir = skimage_data_dir()
    images = [(name, (data_dir / name).read_bytes()) for name in SHIPPED]
    for base in VARIANT_BASES:
        with Image.open(data_dir / base) as opened:
            img = opened.convert("RGB")
        stem = base.rsplit(".", 1)[0]
        images.extend((f"{stem}:{suffix}", make(img)) for suffix, make in _variants())
    return images
