"""The shared reader of text rows (monitor.text_rows): every bad row is one line naming it, the reading goes on."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fairwatch.monitor.text_rows import RowError, TextFileError, TextRow, parse_label, read_text_rows


def rows(path: Path, **kwargs) -> list[TextRow | RowError]:
    return list(read_text_rows(path, **kwargs))


def test_malformed_jsonl_rows_are_one_line_errors_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join([
        b'{"text": "good", "label": "toxic", "groups": {"g": "a", "h": null}}',
        b"{oops",
        b"",
        b'["not", "an", "object"]',
        b'{"text": "", "label": 1}',
        b'{"text": 7, "label": 1}',
        b'{"text": "x", "label": "maybe"}',
        b'{"text": "x", "label": 1, "groups": "a"}',
        b'{"text": "later", "label": null}',
    ]) + b"\n")
    got = rows(path)
    assert got[0] == TextRow(1, "good", 1, {"g": "a"})  # the byte-order mark does not break line 1
    errors = [r for r in got if isinstance(r, RowError)]
    assert [(e.line, e.reason) for e in errors] == [
        (2, "bad_json"), (4, "missing_field"), (5, "no_text"), (6, "no_text"), (7, "unknown_label"), (8, "bad_groups")]
    assert all("\n" not in e.message and e.message.startswith(f"line {e.line}: ") for e in errors)
    assert errors[3].message == "line 6: text is int, not a string"
    assert got[-1] == TextRow(9, "later", None, {})  # a label not arrived yet is not an error


def test_malformed_csv_rows_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("comment,y,sex\nfine,1,F\n,0,M\nhmm,2,F\nwait,,M\n")
    got = rows(path, text_col="comment", label_col="y", group_cols=["sex"])
    assert got[0] == TextRow(2, "fine", 1, {"sex": "F"})
    assert [(r.line, r.reason) for r in got if isinstance(r, RowError)] == [(3, "no_text"), (4, "unknown_label")]
    assert got[-1] == TextRow(5, "wait", None, {"sex": "M"})
    with pytest.raises(TextFileError, match=r"no column 'race' in the header \(comment, y, sex\)"):
        rows(path, text_col="comment", label_col="y", group_cols=["race"])


def test_a_csv_record_csv_cannot_read_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("text,label\nshort,1\n" + "x" * 200 + ",0\nafter,0\n")
    limit = csv.field_size_limit(100)
    try:
        got = rows(path)
    finally:
        csv.field_size_limit(limit)
    assert [r.reason if isinstance(r, RowError) else r.text for r in got] == ["short", "bad_csv", "after"]
    assert got[1].message.startswith("line ") and "field larger than field limit" in got[1].message


def test_unreadable_files_raise_one_line(tmp_path: Path) -> None:
    with pytest.raises(TextFileError, match="no such file"):
        rows(tmp_path / "absent.jsonl")
    (tmp_path / "data.txt").write_text("x\n")
    with pytest.raises(TextFileError, match="cannot tell the format"):
        rows(tmp_path / "data.txt")


@pytest.mark.parametrize("value, expected", [
    (1, 1), (0.0, 0), (True, 1), ("Yes", 1), ("non-toxic", 0), ("1.0", 1), (" false ", 0),
    (None, None), ("", None), ("null", None), ("NaN", None),
])
def test_label_words(value, expected) -> None:  # noqa: ANN001
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", [2, 0.5, "maybe", float("nan")])
def test_unknown_labels_raise(value) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        parse_label(value)


def test_event_cells_take_numbers_and_booleans_only() -> None:
    assert parse_label(" TRUE ", words=False) == 1 and parse_label("0.0", words=False) == 0
    for word in ("yes", "toxic", "negative"):
        with pytest.raises(ValueError):
            parse_label(word, words=False)
