"""Reading a job file's rows (frontend/jobs/rows.py): exact offsets, and every bad row a
row error with a clear reason while the rows after it still parse."""

from __future__ import annotations

import csv
import io

import pytest

from frontend.errors import InputInvalid
from frontend.jobs import records as records_module
from frontend.jobs.rows import Row, RowError, csv_header, read_rows
from frontend.jobs.sniff import Format
from frontend.settings import LimitSettings

LIMITS = LimitSettings()
BIG = 131072 + 10  # over the csv module's default field limit


def read(
    data: bytes, fmt: Format = "csv", *, text_field: str = "text", columns=None, limits=LIMITS
):
    header = csv_header(data, text_field, columns) if fmt == "csv" else None
    f = io.BytesIO(data)
    return list(read_rows(f, fmt, 0, len(data), 1, header, text_field, columns, limits=limits))


def items(data: bytes, fmt: Format = "csv", **kw) -> list[Row | RowError]:
    return [item for _, item in read(data, fmt, **kw)]


def errors(data: bytes, fmt: Format = "csv", **kw) -> dict[int, tuple[str, str]]:
    return {i.number: (i.code, i.reason) for i in items(data, fmt, **kw) if isinstance(i, RowError)}


def texts(data: bytes, fmt: Format = "csv", **kw) -> dict[int, str]:
    return {i.number: i.text for i in items(data, fmt, **kw) if isinstance(i, Row)}


# CSV


def test_csv_rows_with_carried_columns():
    data = b'id,text,lang\n1,hello,en\n2,"a, b",fr\n3,"say ""hi""",de\n'
    assert items(data) == [
        Row(1, "hello", {"id": "1", "lang": "en"}),
        Row(2, "a, b", {"id": "2", "lang": "fr"}),
        Row(3, 'say "hi"', {"id": "3", "lang": "de"}),
    ]
    assert items(data, columns=["lang"])[0] == Row(1, "hello", {"lang": "en"})
    assert items(data, columns=[])[0] == Row(1, "hello", {})


def test_offsets_are_the_byte_ends_of_rows():
    data = b'id,text\r\n1,"two\r\nlines"\r\n\r\n2,caf\xc3\xa9\r\n3,last'
    got = read(data)
    assert [offset for offset, _ in got] == [
        data.index(b"\r\n\r\n") + 2,
        data.index(b"3,last"),
        len(data),
    ]
    assert [item for _, item in got] == [
        Row(1, "two\r\nlines", {"id": "1"}),
        Row(2, "café", {"id": "2"}),
        Row(3, "last", {"id": "3"}),
    ]


def test_a_field_over_the_csv_limit_is_a_row_error_and_later_rows_parse():
    limit = csv.field_size_limit()
    data = (
        b"id,text\n1,first\n2," + b"x" * BIG + b"\n3,third\n"
        b'4,"quoted ' + b"y" * BIG + b'\nstill the field\n""quotes"" ok\nend"\n'
        b'5,"after\nthe big one"\n6,' + b"z" * BIG + b',"opens\na quote"\n7,seventh'
    )
    assert texts(data) == {1: "first", 3: "third", 5: "after\nthe big one", 7: "seventh"}
    reason = f"a field is longer than the CSV limit of {limit} characters"
    assert errors(data) == {n: ("field_too_large", reason) for n in (2, 4, 6)}
    offsets = [offset for offset, _ in read(data)]
    assert offsets[3] == data.index(b"5,") and offsets[5] == data.index(b"7,")
    assert csv.field_size_limit() == limit  # never changed


def test_bad_utf8_is_a_row_error_naming_the_byte():
    data = b'id,text\n1,ok\n2,"caf\xe9\nline two \xff"\n3,fine\n'
    assert errors(data) == {2: ("invalid_utf8", "invalid UTF-8 at byte offset 6 of the row (0xe9)")}
    assert texts(data) == {1: "ok", 3: "fine"}


def test_a_wrong_field_count_is_a_row_error():
    data = b"id,text,lang\n1,a,en\n2,b\n3,c,en,extra\n4,d,en\n"
    assert errors(data) == {
        2: ("field_count", "expected 3 fields, found 2"),
        3: ("field_count", "expected 3 fields, found 4"),
    }
    assert texts(data) == {1: "a", 4: "d"}


def test_a_bare_carriage_return_is_a_row_error():
    data = b"id,text\n1,a\rb\n2,fine\n"
    assert errors(data) == {
        1: ("invalid_csv", "a carriage return inside an unquoted field (quote the field)")
    }
    assert texts(data) == {2: "fine"}


def test_texts_are_checked():
    data = b'id,text\n1,""\n2,   \n3,' + b"a" * 30 + b"\n4,ok\n"
    limits = LimitSettings(max_input_chars=20)
    assert errors(data, limits=limits) == {
        1: ("invalid_text", "text: empty or whitespace-only text"),
        2: ("invalid_text", "text: empty or whitespace-only text"),
        3: ("invalid_text", "text: text has 30 characters; the limit is 20"),
    }


def test_bom_blank_lines_crlf_and_no_trailing_newline():
    data = b"\xef\xbb\xbfid,text\r\n\r\n1,a\r\n\r\n2,b"
    assert items(data) == [Row(1, "a", {"id": "1"}), Row(2, "b", {"id": "2"})]
    assert read(data)[-1][0] == len(data)


def test_an_unclosed_quote_at_the_end_is_a_last_row():
    data = b'id,text\n1,"never closed\nat all'
    assert texts(data) == {1: "never closed\nat all"}


def test_a_row_larger_than_max_row_bytes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(records_module, "MAX_ROW_BYTES", 1000)
    data = (
        b"id,text\n1,a\n2,"
        + b"b" * 2000
        + b',"a quote\nopened late"\n3,"'
        + b"c\n" * 600
        + b'"\n4,d\n'
    )
    assert set(errors(data)) == {2, 3}
    assert {code for code, _ in errors(data).values()} == {"row_too_large"}
    assert texts(data) == {1: "a", 4: "d"}


def test_reading_a_range_mid_file():
    data = b"id,text\n1,a\n2,b\n3,c\n"
    header = ["id", "text"]
    start, end = data.index(b"2,"), data.index(b"3,")
    got = list(
        read_rows(io.BytesIO(data), "csv", start, end, 42, header, "text", None, limits=LIMITS)
    )
    assert got == [(end, Row(42, "b", {"id": "2"}))]


def test_the_header_read_must_match_the_one_checked():
    data = b"id,body\n1,a\n"
    with pytest.raises(ValueError):
        list(
            read_rows(
                io.BytesIO(data),
                "csv",
                0,
                len(data),
                1,
                ["id", "text"],
                "text",
                None,
                limits=LIMITS,
            )
        )


# CSV header


def test_csv_header():
    assert csv_header(b"\xef\xbb\xbfid,text,lang\r\n1,a,b\r\n", "text", ["lang"]) == [
        "id",
        "text",
        "lang",
    ]
    assert csv_header(b'"id","a ""text"""\n', 'a "text"', None) == ["id", 'a "text"']
    assert csv_header(b"\n\ntext", "text", None) == ["text"]


def test_a_wrong_column_is_422_naming_the_header():
    with pytest.raises(InputInvalid) as caught:
        csv_header(b"id,body\n1,hello\n", "text", None)
    assert caught.value.status == 422
    assert (
        caught.value.message
        == "text_field: column 'text' is not in the header: found ['id', 'body']"
    )
    assert caught.value.details[0]["loc"] == ["body", "text_field"]
    assert caught.value.details[0]["header"] == ["id", "body"]
    with pytest.raises(InputInvalid) as caught:
        csv_header(b"id,text\n", "text", ["id", "lang"])
    assert (
        caught.value.message == "columns: column 'lang' is not in the header: found ['id', 'text']"
    )


@pytest.mark.parametrize(
    ("head", "complete", "message"),
    [
        (b"", True, "file: the CSV file has no header (its first record)"),
        (b"\n\r\n", True, "file: the CSV file has no header (its first record)"),
        (
            b"id,text,id\n",
            True,
            "file: the CSV header names 'id' twice: found ['id', 'text', 'id']",
        ),
        (
            b"id,te\xffxt\n",
            True,
            "file: the CSV header cannot be read: invalid UTF-8 at byte offset 5 of the row (0xff)",
        ),
        (
            b"id,text," + b"x" * BIG + b"\n",
            True,
            "file: the CSV header cannot be read: a field is longer than the CSV limit of "
            "131072 characters",
        ),
        (b"id,te", False, "file: the CSV header does not end within the first 5 bytes"),
        (b'id,"te\n', False, "file: the CSV header does not end within the first 7 bytes"),
    ],
)
def test_bad_headers_are_422(head: bytes, complete: bool, message: str):
    with pytest.raises(InputInvalid) as caught:
        csv_header(head, "text", None, complete=complete)
    assert caught.value.message == message


def test_a_header_ending_at_the_end_of_an_incomplete_head():
    assert csv_header(b"id,text\n", "text", None, complete=False) == ["id", "text"]
    assert csv_header(b'id,"te\nxt"\n', "te\nxt", None, complete=False) == ["id", "te\nxt"]


# JSONL


def test_jsonl_rows_and_carried_columns():
    data = b'{"id": 1, "text": "hello", "meta": {"a": [1]}}\n\n  \n"bare text"\r\n{"text": "x"}'
    assert items(data, "jsonl") == [
        Row(1, "hello", {"id": 1, "meta": {"a": [1]}}),
        Row(2, "bare text", {}),
        Row(3, "x", {}),
    ]
    assert items(data, "jsonl", columns=["id", "gone"])[0] == Row(
        1, "hello", {"id": 1, "gone": None}
    )
    assert items(data, "jsonl", columns=["id"])[1] == Row(2, "bare text", {"id": None})
    assert [offset for offset, _ in read(data, "jsonl")] == [
        data.index(b"\n") + 1,
        data.index(b'{"text": "x"}'),
        len(data),
    ]


def test_jsonl_bad_rows_are_row_errors():
    data = b"\n".join(
        [
            b'{"text": "ok"}',
            b'{"text": "unclosed"',
            b'[{"text": "in an array"}]',
            b"42",
            b'{"text": "a", "text": "b"}',
            b'{"body": "no text field"}',
            b'{"text": null}',
            b'{"text": ["a"]}',
            b'{"text": "caf\xe9"}',
            b'{"text": ""}',
            b'{"text": "\\ud800"}',
            b'{"text": "' + b"[" * 0 + b'x", "deep": ' + b"[" * 70 + b"]" * 70 + b"}",
            b'\xef\xbb\xbf{"text": "a BOM mid-file"}',
            b'{"text": "last, no newline"}',
        ]
    )
    assert errors(data, "jsonl") == {
        2: (
            "invalid_json",
            "the row is not valid JSON: Expecting ',' delimiter: line 1 column 20 (char 19)",
        ),
        3: ("not_an_object", "the row is a JSON array, not an object (or a string)"),
        4: ("not_an_object", "the row is a JSON number, not an object (or a string)"),
        5: ("invalid_json", "an object in the row has the same key twice"),
        6: ("missing_text", "the row has no 'text' field"),
        7: ("invalid_text", "text: must be a string, found null"),
        8: ("invalid_text", "text: must be a string, found array"),
        9: ("invalid_utf8", "invalid UTF-8 at byte offset 13 of the row (0xe9)"),
        10: ("invalid_text", "text: empty or whitespace-only text"),
        11: ("invalid_text", "text: invalid text: lone surrogate at character 0"),
        12: ("invalid_json", "JSON nesting exceeds 64 levels"),
        13: (
            "invalid_json",
            "the row is not valid JSON: it starts with a byte order mark or NUL bytes",
        ),
    }
    assert texts(data, "jsonl") == {1: "ok", 14: "last, no newline"}


def test_jsonl_other_text_field_and_bom_at_the_start():
    data = b'\xef\xbb\xbf{"body": "hi", "text": "carried"}\r\n'
    assert items(data, "jsonl", text_field="body") == [Row(1, "hi", {"text": "carried"})]


def test_a_jsonl_line_larger_than_max_row_bytes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(records_module, "MAX_ROW_BYTES", 100)
    data = b'{"text": "a"}\n{"text": "' + b"b" * 3_000_000 + b'"}\n{"text": "c"}'
    assert errors(data, "jsonl") == {2: ("row_too_large", records_module.TOO_LARGE[1])}
    assert texts(data, "jsonl") == {1: "a", 3: "c"}
