"""The labeled events of one model in a time window, read back from Kafka and written as JSONL.

What ``fairwatch export`` and the trigger's ``{data}`` write: one prediction
event per line in the contract's own encoding (``event_id``, ``ts``,
``model``, ``prediction``, ``score``, ``groups``, ``text`` where the event
carries one, ``label``), which ``fairwatch finetune`` reads as it is and
``fairwatch replay`` can replay.

Which events: the predictions of ``model`` whose Kafka record timestamp lies
in the window, each with its label: its own, or the first outcome of its
event_id on either topic. Outcomes are read from the window's start to the
end of the topic when the export began, so an outcome that came after the
window's end still labels its prediction. Works on the raw predictions and
outcomes topics, or on the join's labeled topic alone (``outcomes_topic``
empty: its outcome events come later in the same topic, so it is read to
its end). A redelivered event_id is written once.

``consumers.outcome_join.JoinLogic`` is not reused: it decides what to
forward while a stream goes on (TTL, tables); here the whole window is at
hand and a dict per side is the whole join. The event contract is shared
(``monitor.events.EventParser``), so both read the same records alike.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.time_window import TimeWindow
from fairwatch.consumers.topic_reader import TopicRecord, read_topic_since
from fairwatch.monitor.events import Event, EventParser, Rejection
from fairwatch.monitor.errors import FairwatchError

# Malformed records named one per line at most this many times; the rest are counted.
MALFORMED_SHOWN = 10


@dataclass
class ExportSummary:
    """What an export read and wrote; ``lines()`` is what the CLI and the job log print."""

    model: str
    window: TimeWindow
    written: int = 0
    unlabeled: int = 0  # predictions of the window whose outcome had not arrived when the export read
    without_text: int = 0  # written, but the fine-tune needs a text
    duplicates: int = 0
    conflicting_labels: int = 0  # a second label for an event_id that differs from the first (the first is kept)
    other_models: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)  # reason -> records
    malformed_shown: list[str] = field(default_factory=list)  # "topic/partition@offset: reason: message"

    def reject(self, record: TopicRecord, rejection: Rejection) -> None:
        self.malformed[rejection.reason] += 1
        if len(self.malformed_shown) < MALFORMED_SHOWN:
            self.malformed_shown.append(f"{record.where()}: {rejection}")

    def lines(self) -> list[str]:
        """One line per malformed record shown, then one line of totals."""
        out = [f"skipped malformed record {shown}" for shown in self.malformed_shown]
        skipped = sum(self.malformed.values())
        if skipped > len(self.malformed_shown):
            out.append(f"... {skipped - len(self.malformed_shown)} more malformed records not shown")
        notes = [f"{self.unlabeled} without an outcome yet (left out)"]
        if self.without_text:
            notes.append(f"{self.without_text} without text")
        if self.duplicates:
            notes.append(f"{self.duplicates} duplicates dropped")
        if self.conflicting_labels:
            notes.append(f"{self.conflicting_labels} conflicting labels (first kept)")
        if self.other_models:
            notes.append(f"{sum(self.other_models.values())} of other models")
        if skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.malformed.items()))
            notes.append(f"{skipped} malformed skipped ({reasons})")
        out.append(f"exported {self.written} labeled events of {self.model} from {self.window.describe()} "
                   f"({'; '.join(notes)})")
        return out

    def as_dict(self) -> dict:
        """For the incident's job record."""
        return {"model": self.model, "from": self.window.start_seconds, "to": self.window.end_seconds,
                "written": self.written, "unlabeled": self.unlabeled, "without_text": self.without_text,
                "duplicates": self.duplicates, "conflicting_labels": self.conflicting_labels,
                "other_models": sum(self.other_models.values()), "malformed": dict(self.malformed)}


class EmptyWindow(FairwatchError, ValueError):
    """No prediction of the model in the window: nothing to train on, said in one line."""


class _WindowJoin:
    """Predictions of the window by event_id, labels by event_id, and the counts of what was left out."""

    def __init__(self, model: str, window: TimeWindow, summary: ExportSummary) -> None:
        self.model = model
        self.window = window
        self.summary = summary
        self.parser = EventParser()
        self.predictions: dict[str, tuple[int, Event]] = {}  # event_id -> (record timestamp ms, event)
        self.labels: dict[str, int] = {}

    def add(self, record: TopicRecord) -> None:
        if record.value is None:
            self.summary.reject(record, Rejection("missing_field", "tombstone (a record without a value)"))
            return
        event = self.parser.parse(record.value)
        if event.__class__ is Rejection:
            self.summary.reject(record, event)
        elif event.is_outcome:
            self._label(event.event_id, event.label)
        elif record.timestamp_ms <= self.window.end_ms:
            self._prediction(record, event)

    def _prediction(self, record: TopicRecord, event: Event) -> None:
        if event.model != self.model:
            self.summary.other_models[event.model] += 1
        elif event.event_id in self.predictions:
            self.summary.duplicates += 1
        else:
            self.predictions[event.event_id] = (record.timestamp_ms, event)
            if event.label is not None:
                self._label(event.event_id, event.label)

    def _label(self, event_id: str, label: int | None) -> None:
        known = self.labels.get(event_id)
        if known is None:
            self.labels[event_id] = label
        elif known != label:
            self.summary.conflicting_labels += 1

    def labeled_events(self):
        """The window's predictions with a label, oldest record first."""
        for _ts, event in sorted(self.predictions.values(), key=lambda item: (item[0], item[1].event_id)):
            label = self.labels.get(event.event_id)
            if label is None:
                self.summary.unlabeled += 1
                continue
            event.label = label
            if not event.text:
                self.summary.without_text += 1
            yield event


def export_window(settings: KafkaSettings, model: str, window: TimeWindow, out_path: str | Path) -> ExportSummary:
    """Read the window back (``settings``' predictions and outcomes topics), write its labeled events of
    ``model`` to ``out_path`` (replaced whole, never half written), and say what was read.
    Raises ``EmptyWindow`` (no file written), ``topic_reader.TopicReadError`` and the client's errors; bad
    records are counted, not raised."""
    summary = ExportSummary(model, window)
    join = _WindowJoin(model, window, summary)
    outcomes_apart = bool(settings.outcomes_topic)
    # With outcomes on their own topic the predictions topic can stop at the window's end; a labeled topic
    # carries its late outcomes after it, so it is read to its end.
    for record in read_topic_since(settings, settings.predictions_topic, window.start_ms,
                                   window.end_ms if outcomes_apart else None):
        join.add(record)
    if outcomes_apart:
        for record in read_topic_since(settings, settings.outcomes_topic, window.start_ms):
            join.add(record)
    if not join.predictions:
        seen = ", ".join(f"{name} ({n})" for name, n in summary.other_models.most_common(5)) or "none"
        raise EmptyWindow(f"no prediction of model {model!r} from {window.describe()} on "
                          f"{settings.predictions_topic} (models seen there: {seen})")
    summary.written = _write_jsonl(Path(out_path), join.labeled_events())
    return summary


def _write_jsonl(path: Path, events) -> int:
    encode = msgspec.json.Encoder().encode
    partial = path.with_name(f".{path.name}.partial")
    written = 0
    with open(partial, "wb") as out:
        for event in events:
            out.write(encode(event))
            out.write(b"\n")
            written += 1
    os.replace(partial, path)
    return written


__all__ = ["EmptyWindow", "ExportSummary", "export_window"]
