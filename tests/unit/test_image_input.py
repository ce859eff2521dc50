"""What the imagenet runner accepts, refuses and how it reads pixels
(export/runtime/image_input.py), without Triton and without the model."""

from __future__ import annotations

import base64
import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from export.runtime.batch_model import ItemError
from export.runtime.image_input import ImageLimits, crop_box, decode_image, decode_rgb, to_rgb

LIMITS = ImageLimits()
WHERE = "IMAGE[3]"


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo() -> Image.Image:
    """A deterministic, textured RGB image (noise compresses badly, like a photo)."""
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))


def centre_rgb(data: bytes, limits: ImageLimits = LIMITS) -> np.ndarray:
    """The preprocessed centre pixel, back in 0..255."""
    array = decode_image(data, WHERE, limits).array
    return np.rint(array[:, 112, 112] * 128 + 127)


def refused(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ItemError) as err:
        decode_image(data, WHERE, limits)
    message = str(err.value)
    assert message.startswith(WHERE)
    assert "Traceback" not in message
    return message


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header says width x height: the
    rows it would decode to do not exist; only the header may be read."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 64) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


# --- refused ---------------------------------------------------------------------------


def test_empty():
    assert refused(b"") == "IMAGE[3] is empty (0 bytes)"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"hello, this is not an image", "the data is text"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (bytes(range(256)), "unrecognised data starting 0001020304050607"),
    ],
)
def test_not_an_image(data, says):
    message = refused(data)
    assert "not a JPEG, PNG, WebP or GIF image" in message
    assert says in message


def test_base64_text_is_named():
    message = refused(base64.b64encode(encode(photo(), "JPEG")))
    assert "base64" in message
    assert "send the decoded bytes" in message


@pytest.mark.parametrize(("fmt", "name"), [("TIFF", "TIFF"), ("BMP", "BMP")])
def test_unsupported_format_is_named(fmt, name):
    message = refused(encode(photo(), fmt))
    assert "not a JPEG, PNG, WebP or GIF image" in message
    assert f"a {name} file" in message


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(keep):
    data = encode(photo(), "JPEG", quality=90)
    message = refused(data[: int(len(data) * keep)])
    assert "the JPEG data is truncated or corrupt" in message


def test_truncated_png():
    data = encode(photo(), "PNG")
    assert "the PNG data is truncated or corrupt" in refused(data[: len(data) // 2])


def test_png_with_garbage_in_the_middle():
    data = bytearray(encode(photo(), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = b"\x00" * 64
    message = refused(bytes(data))
    assert "the PNG data is truncated or corrupt" in message
    assert "checksum" in message  # the IDAT CRC, checked before decoding


def test_png_with_a_bad_header_crc():
    data = bytearray(encode(photo(), "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    assert "PNG" in refused(bytes(data))


def test_gif_and_webp_truncated():
    for fmt in ("GIF", "WEBP"):
        data = encode(photo(), fmt)
        assert "truncated or corrupt" in refused(data[: len(data) // 2])


@pytest.mark.parametrize("size", [(1, 1), (15, 200), (200, 15)])
def test_too_small(size):
    message = refused(encode(Image.new("RGB", size, (9, 9, 9)), "PNG"))
    assert f"{size[0]}x{size[1]} pixels is too small" in message
    assert "at least 16 pixels" in message


def test_smallest_accepted_side():
    assert decode_image(encode(Image.new("RGB", (16, 40)), "PNG"), WHERE, LIMITS).width == 16


def test_over_the_byte_cap():
    data = encode(photo(), "PNG")
    message = refused(data, ImageLimits(max_image_bytes=len(data) - 1))
    assert f"{len(data)} bytes is over the limit of {len(data) - 1} bytes" in message
    huge = b"\xff\xd8\xff" + bytes(20 * 1024 * 1024)
    assert "over the limit of 20971520 bytes" in refused(huge)


@pytest.mark.parametrize(
    ("width", "height", "says"),
    [
        (30000, 30000, "900000000 pixels is over the limit of 40000000 pixels"),
        (7000, 7000, "7000x7000 = 49000000 pixels is over the limit of 40000000 pixels"),
    ],
)
def test_decompression_bomb_refused_from_the_header(monkeypatch, width, height, says):
    data = png_claiming(width, height)
    assert len(data) < 1000
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refused(data)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert says in message
    assert decoded == []  # refused before any pixel was decoded
    assert elapsed < 0.5
    assert peak < 5_000_000  # 30000x30000 RGB would be 2.7 GB


def test_pixel_cap_is_a_parameter():
    data = encode(photo(), "PNG")  # 160 x 120
    assert "19200 pixels is over the limit of 10000" in refused(
        data, ImageLimits(max_image_pixels=10_000)
    )


def test_pillow_guard_is_set_per_call_not_at_import():
    before = Image.MAX_IMAGE_PIXELS
    decode_image(encode(photo(), "PNG"), WHERE, ImageLimits(max_image_pixels=123_456))
    assert Image.MAX_IMAGE_PIXELS == 123_456
    Image.MAX_IMAGE_PIXELS = before


# --- accepted --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_accepted_formats(fmt):
    decoded = decode_image(encode(photo(), fmt), WHERE, LIMITS)
    assert decoded.array.shape == (3, 224, 224)
    assert decoded.array.dtype == np.float32
    assert decoded.array.flags["C_CONTIGUOUS"]
    assert (decoded.width, decoded.height) == (160, 120)


def test_normalisation():
    white = decode_image(encode(Image.new("RGB", (40, 40), "white"), "PNG"), WHERE, LIMITS)
    black = decode_image(encode(Image.new("RGB", (40, 40), "black"), "PNG"), WHERE, LIMITS)
    np.testing.assert_array_equal(white.array, (255 - 127) / 128)
    np.testing.assert_array_equal(black.array, -127 / 128)


def test_crop_box_is_the_centre_square():
    assert crop_box(400, 200, 0.875) == (112.5, 12.5, 287.5, 187.5)
    assert crop_box(200, 400, 1.0) == (0.0, 100.0, 200.0, 300.0)


def test_centre_crop_drops_the_edges():
    img = Image.new("RGB", (300, 100), "black")
    img.paste((255, 255, 255), (0, 0, 60, 100))  # a white band on the left fifth
    array = decode_image(encode(img, "PNG"), WHERE, LIMITS).array
    np.testing.assert_array_equal(array, -127 / 128)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(buffer.getvalue())), "n_frames", 1) == 2
    np.testing.assert_allclose(centre_rgb(buffer.getvalue()), [255, 0, 0], atol=1)


def test_animated_png_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:], duration=50)
    np.testing.assert_array_equal(centre_rgb(buffer.getvalue()), [0, 255, 0])


def _left_white(width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height), "black")
    img.paste((255, 255, 255), (0, 0, width // 2, height))
    return img


@pytest.mark.parametrize(
    ("orientation", "white_at"),
    [(1, "left"), (6, "top"), (8, "bottom"), (3, "right")],
)
def test_exif_orientation_is_applied(orientation, white_at):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_left_white(64, 48), "JPEG", quality=95, exif=exif)
    decoded = decode_image(data, WHERE, LIMITS)
    turned = orientation in (6, 8)
    assert (decoded.width, decoded.height) == ((48, 64) if turned else (64, 48))
    grey = decoded.array.mean(axis=0) * 128 + 127
    probes = {"left": grey[112, 10], "right": grey[112, 213], "top": grey[10, 112]}
    probes["bottom"] = grey[213, 112]
    assert probes[white_at] > 240
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[white_at]
    assert probes[opposite] < 15


def test_unreadable_exif_is_ignored():
    data = bytearray(encode(_left_white(64, 48), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage"))
    assert decode_image(bytes(data), WHERE, LIMITS).width == 64


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    np.testing.assert_allclose(centre_rgb(data), [255, 0, 0], atol=3)


def test_16_bit_greyscale_is_scaled_not_clipped():
    values = np.array([[0, 257, 40000, 65535]], dtype=np.uint16).repeat(16, axis=0)
    data = encode(Image.fromarray(values.repeat(4, axis=1)), "PNG")
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "I;16"
    rgb = np.asarray(to_rgb(opened))
    np.testing.assert_array_equal(rgb[0, ::4, 0], [0, 1, 156, 255])  # 40000 * 255/65535
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    uniform = encode(Image.fromarray(np.full((32, 32), 40000, np.uint16)), "PNG")
    np.testing.assert_array_equal(centre_rgb(uniform), [156, 156, 156])  # Pillow's L: 255


def _palette_image(transparent: bool) -> bytes:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([10, 20, 30, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 16, 32))  # left half green, right half entry 0
    return encode(img, "PNG", **({"transparency": 0} if transparent else {}))


def test_palette_without_transparency():
    rgb = np.asarray(to_rgb(Image.open(io.BytesIO(_palette_image(False)))))
    np.testing.assert_array_equal(rgb[0, [0, 20]], [[0, 255, 0], [10, 20, 30]])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_a_transparent_entry_goes_over_white(fmt):
    data = _palette_image(True)
    if fmt == "GIF":
        data = encode(Image.open(io.BytesIO(data)), "GIF", transparency=0)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "P" and opened.info.get("transparency") == 0
    rgb = np.asarray(to_rgb(opened))
    np.testing.assert_array_equal(rgb[0, [0, 20]], [[0, 255, 0], [255, 255, 255]])


def test_rgba_is_composited_over_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 128))
    img.paste((0, 0, 255, 0), (16, 0, 32, 32))  # right half fully transparent
    rgb = np.asarray(to_rgb(Image.open(io.BytesIO(encode(img, "PNG")))), dtype=int)
    np.testing.assert_allclose(rgb[0, 0], [255, 127, 127], atol=1)
    np.testing.assert_array_equal(rgb[0, 20], [255, 255, 255])  # not the stored blue


def test_la_is_composited_over_white():
    img = Image.new("LA", (48, 32), (0, 255))
    img.paste((0, 0), (16, 0, 32, 32))
    img.paste((100, 128), (32, 0, 48, 32))
    rgb = np.asarray(to_rgb(Image.open(io.BytesIO(encode(img, "PNG")))), dtype=int)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 20], [255, 255, 255])
    np.testing.assert_allclose(rgb[0, 40], [177, 177, 177], atol=1)  # 100a + 255(1-a)


def test_greyscale_and_bilevel_become_three_equal_channels():
    for mode, value, expected in (("L", 90, 90), ("1", 1, 255)):
        data = encode(Image.new(mode, (32, 32), value), "PNG")
        np.testing.assert_array_equal(centre_rgb(data), [expected] * 3)


# --- another kind's preprocessing (image_pipeline.HfSteps) -------------------------------


def test_decode_rgb_is_the_image_before_preprocessing():
    rgba = photo().convert("RGBA")
    rgba.putalpha(0)  # fully transparent: white once composited
    img = decode_rgb(encode(rgba, "PNG"), WHERE, LIMITS)
    assert (img.mode, img.size) == ("RGB", (160, 120))
    assert np.asarray(img).min() == 255


def test_a_preprocess_replaces_the_imagenet_geometry():
    data = encode(photo(), "PNG")
    seen = []

    def preprocess(rgb: Image.Image) -> np.ndarray:
        seen.append(rgb.size)
        return np.zeros((3, 5, 7), np.float32)

    decoded = decode_image(data, WHERE, LIMITS, preprocess)
    assert seen == [(160, 120)]
    assert decoded.array.shape == (3, 5, 7)
    assert (decoded.width, decoded.height) == (160, 120)  # as decoded, not as resized
    # Refusals come first: a refused image never reaches the preprocessing.
    with pytest.raises(ItemError):
        decode_image(data[: len(data) // 2], WHERE, LIMITS, preprocess)
    assert len(seen) == 1


def test_without_a_preprocess_the_imagenet_values_are_unchanged():
    data = encode(photo(), "PNG")
    default = decode_image(data, WHERE, LIMITS).array
    assert default.shape == (3, 224, 224) and default.dtype == np.float32
    assert np.array_equal(default, decode_image(data, WHERE, LIMITS, None).array)
    assert ImageLimits.from_params({"preprocess": "hf", "image_size": "224"}) == LIMITS
