"""Rows of text, label and groups from a CSV or JSONL file: one reader, one line per bad row.

The file sources (``consumers.files``), the fine-tune job's windows
(``alerts.finetune``) and ``fairwatch score`` read their files through here:
the same format detection, byte-order-mark and line-ending handling, label
words and column checks. A file that cannot be read at all raises
:class:`TextFileError` (one line for the CLI); a bad row is a
:class:`RowError` naming its line, and the reading goes on.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "window.jsonl"
>>> _ = path.write_text('{"text": "hi", "label": "toxic", "groups": {"g": "a"}}\\nnot json\\n')
>>> [type(r).__name__ for r in read_text_rows(path)]
['TextRow', 'RowError']
>>> list(read_text_rows(path))[1].message
'line 2: not valid JSON'
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairwatch.monitor.errors import FairwatchError

__all__ = ["FORMATS", "TRUE_WORDS", "FALSE_WORDS", "RowError", "TextFileError", "TextRow", "binary_lines",
           "check_columns", "csv_header", "csv_records", "detect_format", "open_binary", "open_text", "parse_label",
           "read_text_rows"]

FORMATS = ("csv", "jsonl")
_BOM = b"\xef\xbb\xbf"
# Label cells in words: numbers and booleans (what an event's CSV cells may hold), and the words
# labeled data sets use (what the fine-tune job's windows may hold as well).
NUMBER_TRUE, NUMBER_FALSE = frozenset({"1", "1.0", "true"}), frozenset({"0", "0.0", "false"})
TRUE_WORDS = NUMBER_TRUE | {"yes", "toxic", "positive"}
FALSE_WORDS = NUMBER_FALSE | {"no", "nontoxic", "non-toxic", "negative"}
MISSING_WORDS = frozenset({"", "null", "none", "nan"})


class TextFileError(FairwatchError):
    """The file cannot be read at all (missing, unknown format, bad header): one line for the CLI."""


@dataclass(frozen=True)
class TextRow:
    """One usable row: its line in the file, the text, the 0/1 label (None: not arrived) and groups."""

    line: int
    text: str
    label: int | None = None
    groups: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowError:
    """One unusable row: ``reason`` a short code (``bad_json``, ``missing_field``, ``no_text``, ``unknown_label``...), ``message`` one line."""

    line: int
    reason: str
    message: str


def parse_label(value: Any, *, words: bool = True) -> int | None:
    """0/1 from an int, bool, float or word; None for a missing label; ValueError otherwise.

    ``words=False``: numbers and booleans only (``yes`` or ``toxic`` is then an unknown label).

    >>> parse_label("Toxic"), parse_label(0), parse_label(""), parse_label("1.0")
    (1, 0, None, 1)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        if value in (0, 1):
            return int(value)
        raise ValueError(value)
    word = str(value).strip().lower()
    if word in (TRUE_WORDS if words else NUMBER_TRUE):
        return 1
    if word in (FALSE_WORDS if words else NUMBER_FALSE):
        return 0
    if word in MISSING_WORDS:
        return None
    raise ValueError(value)


def detect_format(path: str | Path, declared: str | None = None) -> str:
    """``csv`` or ``jsonl``: ``declared`` if given, else from the file's ending."""
    if declared:
        return declared
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise TextFileError(f"cannot tell the format of {path} from its ending; pass --format csv or --format jsonl")


def _opened(path: Path, opener):
    try:
        return opener()
    except FileNotFoundError:
        raise TextFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise TextFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def open_text(path: str | Path):
    """A CSV file opened for ``csv``; utf-8-sig: a byte-order mark would otherwise glue itself,
    invisibly, to the first column's name."""
    path = Path(path)
    return _opened(path, lambda: open(path, newline="", encoding="utf-8-sig", errors="replace"))


def open_binary(path: str | Path):
    path = Path(path)
    return _opened(path, lambda: open(path, "rb"))


def binary_lines(handle) -> Iterator[bytes]:
    """The lines of a binary file whatever their ending (LF, CRLF or CR alone), without a
    leading UTF-8 byte-order mark (it would make the first event invalid JSON)."""
    first = True
    for chunk in handle:
        if first:
            first = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
        # A CR before the line's own ending is a line ending too (old Mac files, or mixed ones).
        if b"\r" in chunk.rstrip(b"\r\n"):
            yield from chunk.splitlines()
        else:
            yield chunk


def check_columns(header: Sequence[str], wanted: Sequence[str | None], path: str | Path) -> None:
    """TextFileError naming the ``wanted`` columns (None: not wanted) missing from ``header``."""
    missing = [c for c in wanted if c is not None and c not in header]
    if missing:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise TextFileError(f"{path}: no column {', '.join(map(repr, missing))} in the header ({shown})")


def csv_header(reader: csv.DictReader, path: str | Path) -> list[str]:
    """The header of a CSV file; TextFileError when it cannot be read."""
    try:
        return list(reader.fieldnames or [])
    except csv.Error as exc:
        raise TextFileError(f"{path}: unreadable CSV header: {exc}") from None


def csv_records(reader: csv.DictReader) -> Iterator[tuple[int, dict[str, str] | csv.Error]]:
    """(line, row) per CSV record, (line, the csv.Error) for one that csv cannot read; reading goes on."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, exc
            continue
        yield reader.line_num, row


def read_text_rows(path: str | Path, text_col: str = "text", label_col: str | None = "label",
                   group_cols: Sequence[str] | None = None, fmt: str | None = None) -> Iterator[TextRow | RowError]:
    """Every non-blank row of a CSV or JSONL file as a TextRow or a RowError.

    CSV: ``text_col``, ``label_col`` (None: no label) and each of ``group_cols``
    (an attribute each) are columns. JSONL: ``text_col`` and ``label_col`` are
    keys of each object; groups come from its ``groups`` object (the event
    contract), only the keys in ``group_cols`` when it is given (``()``: none).
    """
    path = Path(path)
    if detect_format(path, fmt) == "csv":
        yield from _csv_rows(path, text_col, label_col, tuple(group_cols or ()))
    else:
        yield from _jsonl_rows(path, text_col, label_col, group_cols)


def _row(line: int, text: Any, label: Any, label_col: str | None, groups: dict[str, str]) -> TextRow | RowError:
    if not isinstance(text, str) or not text.strip():
        return RowError(line, "no_text", f"line {line}: no text" if text is None or isinstance(text, str)
                        else f"line {line}: text is {type(text).__name__}, not a string")
    try:
        parsed = parse_label(label) if label_col is not None else None
    except ValueError:
        return RowError(line, "unknown_label", f"line {line}: unknown label {label!r} in {label_col!r} "
                        "(expected 0/1, true/false or a label word)")
    return TextRow(line, text, parsed, groups)


def _csv_rows(path: Path, text_col: str, label_col: str | None, group_cols: tuple[str, ...]):
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        check_columns(csv_header(reader, path), [text_col, label_col, *group_cols], path)
        for line, row in csv_records(reader):
            if isinstance(row, csv.Error):
                yield RowError(line, "bad_csv", f"line {line}: {row}")
                continue
            groups = {c: row[c] for c in group_cols if row.get(c)}
            yield _row(line, row.get(text_col), row.get(label_col) if label_col else None, label_col, groups)


def _jsonl_rows(path: Path, text_col: str, label_col: str | None, group_cols: Sequence[str] | None):
    with open_binary(path) as handle:
        for line, raw in enumerate(binary_lines(handle), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8", errors="replace"))
            except ValueError:
                yield RowError(line, "bad_json", f"line {line}: not valid JSON")
                continue
            if not isinstance(obj, dict) or text_col not in obj:
                yield RowError(line, "missing_field", f"line {line}: no key {text_col!r}")
                continue
            groups = obj.get("groups") or {}
            if group_cols is not None and isinstance(groups, dict):
                groups = {k: groups[k] for k in group_cols if k in groups}
            if not isinstance(groups, dict):
                yield RowError(line, "bad_groups", f"line {line}: groups is {type(groups).__name__}, not an object")
                continue
            groups = {str(k): str(v) for k, v in groups.items() if v is not None}
            yield _row(line, obj[text_col], obj.get(label_col) if label_col else None, label_col, groups)
