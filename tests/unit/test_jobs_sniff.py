"""What frontend/jobs/sniff.py takes for a job file and how it refuses the rest: 422 for
an empty file, 415 naming what the file looks like, or why it is not UTF-8."""

from __future__ import annotations

import codecs
import gzip
import io
import zipfile

import pytest

from frontend.errors import InputInvalid, UnsupportedMediaType
from frontend.jobs.sniff import check, declared


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("rows.csv", "id,text\n1,hello\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("head", "name", "fmt"),
    [
        (b'{"text": "a"}\n{"text": "b"}\n', "rows.jsonl", "jsonl"),
        (b'{"text": "a"}\n', "rows.ndjson", "jsonl"),
        (b'  \n\n{"text": "a"}\n', "rows", "jsonl"),
        (b'\xef\xbb\xbf{"text": "a"}\n', "rows.JSONL", "jsonl"),  # BOM tolerated
        (b"id,text\n1,hello\n", "rows.csv", "csv"),
        (b"\xef\xbb\xbfid,text\r\n1,h\xc3\xa9llo\r\n", "rows.csv", "csv"),
        (b'"id","text"\n"1","hello"\n', "rows.csv", "csv"),
        (b'"id","text"\n', "rows.txt", "csv"),
        (b"text\nhello\n", "rows.tsv", "csv"),
        (b'"hello"\n"world"\n', "rows.jsonl", "jsonl"),  # bare JSON strings
        (b'"hello"\n"world"\n', "rows.csv", "csv"),  # ...or a one-column CSV
        (b"BZhost,text\n", "rows.csv", "csv"),  # not a bzip2 magic number
        (b"RIFF,text\n1,a\n", "rows.csv", "csv"),
    ],
)
def test_takes_utf8_jsonl_and_csv(head: bytes, name: str, fmt: str):
    assert check(head, True, name) == fmt


def test_a_character_cut_by_the_head_is_fine_unless_the_file_ends_there():
    head = b"id,text\n1,caf\xc3"  # the first byte of "é"
    assert check(head, False, "rows.csv") == "csv"
    with pytest.raises(UnsupportedMediaType, match="invalid UTF-8 at offset 13"):
        check(head, True, "rows.csv")


@pytest.mark.parametrize("head", [b"", b"\xef\xbb\xbf", b" \r\n\t\n"])
def test_an_empty_file_is_422(head: bytes):
    with pytest.raises(InputInvalid) as caught:
        check(head, True, "rows.csv")
    assert caught.value.message == "file 'rows.csv' is empty"
    assert caught.value.status == 422
    assert caught.value.details[0]["loc"] == ["body", "file"]


def test_whitespace_so_far_is_not_empty_yet():
    assert check(b"\n" * 8192, False, "rows.jsonl") == "jsonl"
    assert check(b"\n" * 8192, False, "rows") == "csv"


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (zipped(), "a ZIP archive"),
        (b"PK\x05\x06" + bytes(18), "a ZIP archive"),
        (gzip.compress(b"id,text\n"), "a gzip file"),
        (b"BZh91AY&SY\x00", "a bzip2 file"),
        (b"\xfd7zXZ\x00\x00", "an xz file"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "a 7-Zip archive"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF document"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
        (b"GIF89a\x01\x00\x01\x00", "a GIF image"),
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "a RIFF file (WAVE)"),
        (b"RIFF\x24\x08\x00\x00WEBPVP8 ", "a RIFF file (WEBP)"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", "an ICO image"),
    ],
)
def test_binary_files_are_415_naming_what_they_are(head: bytes, what: str):
    with pytest.raises(UnsupportedMediaType) as caught:
        check(head, True, "rows.csv")
    assert caught.value.message.startswith(f"file 'rows.csv' is {what}")
    assert caught.value.message.endswith("not CSV or JSONL")
    assert caught.value.status == 415
    assert caught.value.code == "unsupported_media_type"
    assert caught.value.details["file"] == "rows.csv"


def test_a_zip_named_csv_is_415_naming_zip():
    with pytest.raises(UnsupportedMediaType) as caught:
        check(zipped()[:8192], False, "rows.csv")
    assert caught.value.message == (
        "file 'rows.csv' is a ZIP archive (or a DOCX/XLSX document), not CSV or JSONL"
    )


@pytest.mark.parametrize(
    ("encoding", "shown"),
    [("utf-16", "UTF-16"), ("utf-16-be", None), ("utf-16-le", None), ("utf-32", "UTF-32")],
)
def test_utf16_and_utf32_are_415_not_utf8(encoding: str, shown: str | None):
    head = "id,text\n1,héllo\n".encode(encoding)
    if encoding == "utf-16-be":
        head = codecs.BOM_UTF16_BE + head
        shown = "UTF-16"
    with pytest.raises(UnsupportedMediaType) as caught:
        check(head, True, "rows.csv")
    message = caught.value.message
    assert message.startswith("file 'rows.csv' is not UTF-8 text: ")
    if shown:
        assert message.endswith(f"it starts with a {shown} byte order mark")
    else:  # no BOM: its NULs give it away
        assert "NUL byte at offset 1" in message


def test_nul_bytes_are_415():
    with pytest.raises(UnsupportedMediaType, match=r"NUL byte at offset 9 \(UTF-16"):
        check(b"id,text\n1\x00,a\n", True, "rows.csv")


def test_invalid_utf8_is_415_naming_the_byte():
    head = "id,text\n1,café\n".encode("latin-1")
    with pytest.raises(UnsupportedMediaType) as caught:
        check(head, True, "legacy.csv")
    assert caught.value.message == (
        "file 'legacy.csv' is not UTF-8 text: invalid UTF-8 at offset 13 (byte 0xe9)"
    )


def test_a_json_array_is_not_jsonl():
    with pytest.raises(UnsupportedMediaType) as caught:
        check(b'[{"text": "a"}, {"text": "b"}]', True, "rows.json")
    assert caught.value.message == (
        "file 'rows.json' is a JSON array, not JSONL (one JSON object per line)"
    )


def test_the_name_may_not_contradict_the_content():
    with pytest.raises(UnsupportedMediaType) as caught:
        check(b'{"text": "a"}\n', True, "rows.csv")
    assert caught.value.message == "file 'rows.csv' is named as CSV but holds JSONL"
    with pytest.raises(UnsupportedMediaType) as caught:
        check(b"id,text\n1,a\n", True, "rows.jsonl")
    assert caught.value.message == (
        "file 'rows.jsonl' is named as JSONL but holds CSV (its first line is not a JSON object)"
    )
    with pytest.raises(UnsupportedMediaType):
        check(b'"id","text"\n', True, "rows.ndjson")


def test_declared_formats():
    assert declared("a.jsonl") == declared("A.NDJSON") == "jsonl"
    assert declared("a.csv") == "csv"
    assert declared("csv") is declared(".csv") is declared("a.json") is declared("") is None
