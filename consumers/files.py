"""CSV and JSONL files as event sources: the embedded default, no broker needed.

JSONL lines follow the event contract (``monitor.events``). CSV rows are
mapped to prediction events through :class:`CsvMapping`; an empty label
cell is a prediction whose label has not arrived yet, never an invalid row.
Every bad line or row becomes a ``Rejection`` naming its line number; the
stream goes on.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fairwatch.monitor.events import Event, EventParser, Rejection
from fairwatch.monitor.text_rows import (
    FORMATS,
    TextFileError,
    binary_lines,
    check_columns,
    csv_header,
    csv_records,
    detect_format,
    open_binary,
    open_text,
    parse_label,
)

BATCH_SIZE = 4096
# An unreadable file (missing, unknown format, bad header) is the shared reader's error: one line for the CLI.
SourceError = TextFileError


@dataclass
class CsvMapping:
    """How CSV columns map to the event contract."""

    id_col: str | None = None  # None: the row number is the event id
    prediction_col: str | None = None
    score_col: str | None = None
    threshold: float | None = None  # prediction = score >= threshold
    label_col: str | None = None
    group_cols: list[str] = field(default_factory=list)
    ts_col: str | None = None
    text_col: str | None = None
    model: str = "default"

    def check(self, header: list[str], path) -> None:
        if self.prediction_col is None and (self.score_col is None or self.threshold is None):
            raise SourceError("CSV needs --prediction-col, or --score-col with --threshold")
        if self.prediction_col is not None and self.threshold is not None:
            raise SourceError("--threshold derives the prediction from --score-col; with --prediction-col it would "
                              "be ignored: give one of the two")
        if not self.group_cols:
            raise SourceError("CSV needs at least one --group-col COLUMN")
        wanted = [self.id_col, self.prediction_col, self.score_col, self.label_col, self.ts_col, self.text_col]
        check_columns(header, [*wanted, *self.group_cols], path)


def _label_cell(cell: str | None) -> int | None:
    """0/1 of a prediction or label cell (numbers and booleans only); None when empty or not a label."""
    try:
        return parse_label(cell or "", words=False)
    except ValueError:
        return None


def _parse_ts(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        ts = datetime.fromisoformat(cell.replace("Z", "+00:00"))
        return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()


def csv_row_to_event(row: dict[str, str], line: int, m: CsvMapping, now: float) -> Event | Rejection:
    def bad(reason: str, message: str) -> Rejection:
        return Rejection(reason, f"line {line}: {message}")

    if None in row:  # more cells than header columns
        return bad("bad_value", f"{len(row) - 1 + len(row[None])} cells, the header has {len(row) - 1}")
    for col in (m.id_col, m.prediction_col, m.score_col, m.label_col, m.ts_col, *m.group_cols):
        cell = row.get(col) if col is not None else None
        if cell and ("\n" in cell or "\r" in cell):
            # Only a text may span lines: elsewhere a quote left open has swallowed the rows after it.
            breaks = sum(c.count("\n") for c in row.values() if isinstance(c, str))
            first = line - breaks + cell.endswith("\n")  # a quote open to the end holds the last line's break
            return Rejection("bad_value", f"lines {first}-{line}: column {col!r} holds a line break "
                                          f"({cell[:40]!r}...): a quote left open? The rows inside it are not read")
    event_id = row[m.id_col] if m.id_col else str(line)
    if event_id is None or not event_id.strip():
        return bad("missing_field", f"empty event id in column {m.id_col!r}")
    score = None
    if m.score_col is not None:
        cell = row[m.score_col]
        if cell is None or cell == "":
            if m.prediction_col is None:
                return bad("missing_field", f"empty score in column {m.score_col!r}")
        else:
            try:
                score = float(cell)
            except ValueError:
                return bad("wrong_type", f"score {cell!r} in column {m.score_col!r} is not a number")
            if not math.isfinite(score):
                return bad("bad_value", f"score {cell!r} in column {m.score_col!r} is not finite")
    if m.prediction_col is not None:
        prediction = _label_cell(row[m.prediction_col])
        if prediction is None:
            return bad("bad_value", f"prediction {row[m.prediction_col]!r} in column {m.prediction_col!r} is not 0 or 1")
    else:
        prediction = int(score >= m.threshold)
    label = None
    if m.label_col is not None:
        cell = (row[m.label_col] or "").strip()
        if cell:
            label = _label_cell(cell)
            if label is None:
                return bad("unknown_label", f"unknown label {cell!r} in column {m.label_col!r} (expected 0, 1 or empty)")
    groups = {}
    for col in m.group_cols:
        value = row[col]
        if value is None:
            return bad("missing_field", f"no cell for group column {col!r}")
        groups[col] = value.strip() or "unknown"
    ts = now
    if m.ts_col is not None and row[m.ts_col]:
        try:
            ts = _parse_ts(row[m.ts_col])
        except ValueError:
            return bad("wrong_type", f"time {row[m.ts_col]!r} in column {m.ts_col!r} is neither epoch seconds nor ISO 8601")
    text = row[m.text_col] if m.text_col else None
    return Event(
        event_id=event_id, ts=ts, model=m.model, prediction=prediction, score=score,
        groups=groups, text=text, label=label,
    )


def read_csv(path: str | Path, mapping: CsvMapping, parser: EventParser, batch_size: int = BATCH_SIZE):
    """Batches of Events/Rejections from a CSV file."""
    path = Path(path)
    csv.field_size_limit(max(parser.max_event_bytes, 1 << 17))
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        mapping.check(csv_header(reader, path), path)
        now = parser.now()
        batch: list[Event | Rejection] = []
        for line, row in csv_records(reader):
            if row.__class__ is not dict:  # a record csv cannot read
                batch.append(Rejection("oversized" if "field larger" in str(row) else "bad_value", f"line {line}: {row}"))
                continue
            event = csv_row_to_event(row, line, mapping, now)
            batch.append(event if event.__class__ is Rejection else parser.check(event))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def read_jsonl(path: str | Path, parser: EventParser, batch_size: int = BATCH_SIZE):
    """Batches of Events/Rejections from a JSON-lines file (blank lines skipped)."""
    path = Path(path)
    handle = open_binary(path)
    parse = parser.parse
    with handle:
        batch: list[Event | Rejection] = []
        for number, line in enumerate(binary_lines(handle), 1):
            if not line.strip():
                continue
            event = parse(line)
            if event.__class__ is Rejection:
                event = Rejection(event.reason, f"line {number}: {event.message}")
            batch.append(event)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def read_events(path, fmt: str | None, mapping: CsvMapping, parser: EventParser, batch_size: int = BATCH_SIZE
                ) -> Iterator[list[Event | Rejection]]:
    fmt = detect_format(path, fmt)
    if fmt == "csv":
        return read_csv(path, mapping, parser, batch_size)
    return read_jsonl(path, parser, batch_size)



__all__ = ["CsvMapping", "SourceError", "read_events", "read_csv", "read_jsonl", "FORMATS"]
