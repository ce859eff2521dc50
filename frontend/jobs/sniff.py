"""What an uploaded job file holds, from its first bytes: UTF-8 JSONL or CSV, or a clear
refusal that names the file and what it looks like instead.

Our own checks rather than libmagic: we only need "UTF-8 text, JSONL or CSV", which a deny
list of magic numbers, a NUL check and a UTF-8 check decide. The name's extension is never
trusted for the format, only checked against it (a `.csv` holding JSONL is refused).
"""

from __future__ import annotations

import codecs
from typing import Final, Literal

import orjson

from ..errors import InputInvalid, UnsupportedMediaType

Format = Literal["jsonl", "csv"]

UTF8_BOM: Final = b"\xef\xbb\xbf"
_SPACE: Final = b" \t\r\n\f\v"
_NAMES: Final[dict[str, Format]] = {"jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv"}
_SHOWN: Final[dict[Format, str]] = {"jsonl": "JSONL", "csv": "CSV"}

# (prefix, what it is). Exact enough that a CSV header cannot start with one by chance.
_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"PK\x03\x04", "a ZIP archive (or a DOCX/XLSX document)"),
    (b"PK\x05\x06", "a ZIP archive (an empty one)"),
    (b"PK\x07\x08", "a ZIP archive (a spanned one)"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x00\x00\x01\x00", "an ICO image"),
)
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _refuse(name: str, what: str, found: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"file '{name}' is {what}", details={"file": name, "found": found})


def _not_utf8(name: str, why: str, found: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"file '{name}' is not UTF-8 text: {why}", details={"file": name, "found": found}
    )


def _binary(head: bytes) -> str | None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[3:4] != b"0":
        return "a bzip2 file"
    # RIFF, a 4-byte size, then a four-letter type (WAVE, AVI , WEBP, ...).
    if head.startswith(b"RIFF") and len(head) >= 12 and head[8:12].strip().isalpha():
        return f"a RIFF file ({head[8:12].decode('ascii').strip()})"
    return None


def declared(name: str) -> Format | None:
    """The format the file's name claims (`.jsonl`/`.ndjson`, `.csv`), or None."""
    stem, dot, ext = name.rpartition(".")
    return _NAMES.get(ext.lower()) if dot and stem else None


def check(head: bytes, complete: bool, name: str) -> Format:
    """The format of a file from its first bytes (`complete`: they are the whole file).
    Raises InputInvalid (422) for an empty file, UnsupportedMediaType (415) otherwise."""
    body = head.removeprefix(UTF8_BOM)
    if complete and not body.strip(_SPACE):
        raise InputInvalid(
            f"file '{name}' is empty",
            details=[{"loc": ["body", "file"], "msg": "empty file", "file": name}],
        )
    what = _binary(head)
    if what is not None:
        raise _refuse(name, f"{what}, not CSV or JSONL", "binary")
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            raise _not_utf8(name, f"it starts with a {encoding} byte order mark", encoding)
    nul = head.find(b"\x00")
    if nul >= 0:
        raise _not_utf8(
            name, f"it holds a NUL byte at offset {nul} (UTF-16, UTF-32 or binary)", "nul"
        )
    try:
        # Not final unless complete: a character cut by the end of the head is fine.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError as exc:
        byte = head[exc.start]
        raise _not_utf8(
            name, f"invalid UTF-8 at offset {exc.start} (byte 0x{byte:02x})", "invalid_utf8"
        ) from None
    fmt = _content(text.removeprefix("\ufeff").lstrip(), complete, declared(name))
    if fmt == "json_array":
        raise _refuse(name, "a JSON array, not JSONL (one JSON object per line)", fmt)
    claimed = declared(name)
    if claimed is not None and claimed != fmt:
        raise UnsupportedMediaType(
            f"file '{name}' is named as {_SHOWN[claimed]} but holds {_SHOWN[fmt]}"
            + (" (its first line is not a JSON object)" if fmt == "csv" else ""),
            details={"file": name, "found": fmt, "declared": claimed},
        )
    return fmt


def _content(text: str, complete: bool, claimed: Format | None) -> Format | Literal["json_array"]:
    if not text:  # only whitespace so far, more to come: the name is all we have
        return claimed or "csv"
    if text[0] == "{":
        return "jsonl"
    if text[0] == "[":
        return "json_array"
    if text[0] == '"':
        # A JSONL row may be a bare JSON string, and a CSV header may start quoted: a
        # first line that is exactly one JSON string is both, and the name decides.
        line, newline, _ = text.partition("\n")
        if newline or complete:
            try:
                if isinstance(orjson.loads(line), str):
                    return claimed or "csv"
            except orjson.JSONDecodeError:
                pass
    return "csv"
