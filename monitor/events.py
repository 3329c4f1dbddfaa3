"""Prediction, generation and outcome events: the wire contract, parsed and validated fast.

A generation event (an LLM application's answer) is one that carries a
``response`` (and optionally its ``prompt``); ``prediction`` is then optional:
the monitor scores the response itself (monitor.generation).

Bad input is data: :func:`EventParser.parse` returns a :class:`Rejection`
with a bounded reason code and a one-line human message instead of raising.

>>> parser = EventParser()
>>> ev = parser.parse(b'{"event_id": "a1", "ts": "2026-11-22T10:00:00Z", '
...                   b'"prediction": 1, "groups": {"sex": "Male"}}')
>>> ev.event_id, ev.prediction, ev.ts
('a1', 1, 1795341600.0)
>>> parser.parse(b'{"event_id": "a1", "prediction": 1, "groups": {}, "label": 7}').message
'unknown label 7 (expected 0, 1 or null) at `$.label`'
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Union

import msgspec

DEFAULT_MODEL = "default"
MAX_EVENT_BYTES = 1 << 20
MAX_TEXT_CHARS = 20_000
MAX_EVENT_ID_CHARS = 256
# Bounds on the protected groups of one event: every distinct value is held in
# memory and may become a label value, so a hostile event must not make them huge.
MAX_ATTRIBUTE_CHARS = 64
MAX_GROUP_VALUE_CHARS = 256
MAX_GROUPS_PER_EVENT = 64
# Event times later than the read time plus this are refused: a time in year 9999
# would own the newest time window until that date.
MAX_FUTURE_SECONDS = 86_400.0

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
Groups = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=MAX_ATTRIBUTE_CHARS)],
         Annotated[str, msgspec.Meta(max_length=MAX_GROUP_VALUE_CHARS)]],
    msgspec.Meta(max_length=MAX_GROUPS_PER_EVENT),
]
Timestamp = Union[datetime, float, None]


class PredictionCopy(msgspec.Struct, kw_only=True, gc=False):
    """The fields of a prediction that its label needs, attached to an outcome by ``fairwatch join``.

    With several workers, an outcome can reach a worker that did not count
    its prediction (the partition moved after the prediction was applied);
    the copy lets that worker count the label without the prediction.
    """

    model: str
    prediction: int
    score: Union[float, None] = None
    groups: Groups
    ts: float


class Event(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """One line of the stream: a prediction, a generation (``response``), or an outcome (``label`` only).

    After :meth:`EventParser.parse`, ``ts`` is epoch seconds, ``model`` is set
    and ``prediction`` is 0 or 1 for predictions and None for outcomes.
    ``gc=False``: an event holds no cycles, and batches of millions of
    tracked objects would make Python's cyclic collector the main cost.
    ``omit_defaults``: an encoded outcome has no ``"prediction": null`` (the
    join and ``fairwatch produce`` re-encode events).
    """

    event_id: EventId
    ts: Timestamp = None
    model: Union[str, None] = None
    model_version: Union[str, None] = None
    prediction: Union[int, None] = None
    score: Union[float, None] = None
    groups: Union[Groups, None] = None
    text: Union[str, None] = None
    # An LLM generation: the response is scored per group (refusal, sentiment); the prompt is only
    # bounded and carried, never scored, stored or exported.
    prompt: Union[str, None] = None
    response: Union[str, None] = None
    label: Union[int, None] = None
    prediction_copy: Union[PredictionCopy, None] = None  # outcomes forwarded by `fairwatch join` only

    @property
    def is_outcome(self) -> bool:
        return self.prediction is None and self.response is None

    @property
    def is_generation(self) -> bool:
        return self.response is not None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input was refused. ``reason`` is one of metric_names.REJECTION_REASONS."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def classify_validation_error(message: str) -> str:
    """Map a msgspec error message to a bounded rejection reason."""
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.startswith("Expected"):
        if "of length <=" in message:
            return "oversized"
        return "wrong_type" if "length" not in message else "bad_value"
    return "bad_value"


def to_epoch_seconds(ts: datetime | float | None, default: float) -> float:
    if ts is None:
        return default
    if type(ts) is datetime:
        if ts.tzinfo is None:  # a naive time in an event is read as UTC
            ts = ts.replace(tzinfo=timezone.utc)
        return ts.timestamp()
    return float(ts)


# The checks stay inline in EventParser.check (they run on every event); only the wording is shared.
def _not_binary(prediction: int, path: str) -> Rejection:
    return Rejection("bad_value", f"prediction must be 0 or 1, got {prediction!r} at `{path}`")


def _bad_time(ts: float, path: str, max_future_seconds: float) -> Rejection:
    if ts >= 0.0:
        return Rejection("bad_value", f"time {ts!r} lies in the future, more than {max_future_seconds:g} s past the "
                                      f"read time (max_future_seconds) at `{path}`")
    return Rejection("bad_value", f"time {ts!r} is not a time since 1970 at `{path}`")


def internal_error(exc: BaseException) -> Rejection:
    """A record whose handling raised: isolated from its batch, with the exception as the message."""
    return Rejection("internal_error", f"{type(exc).__name__}: {exc}")


def _generation_rejection(event: Event) -> Rejection | None:
    """What a generation event lacks, or None. Its groups are needed (they are what is compared), unless a
    generation alone has a prompt to infer them from (the pipeline does, monitor.generation.inferred_groups);
    a label means nothing without a prediction to label."""
    if event.response is None:
        return Rejection("missing_field", "Object missing required field `response` (a `prompt` comes with its "
                                          "response)")
    if event.groups is None and (event.prompt is None or event.prediction is not None):
        return Rejection("missing_field", "Object missing required field `groups` (or, for a generation without "
                                          "a prediction, a `prompt` to infer them from)")
    if event.prediction is None and event.label is not None:
        return Rejection("bad_value", "a generation without a `prediction` cannot take a `label` at `$.label`")
    return None


def _not_finite(score: float, path: str) -> Rejection:
    return Rejection("bad_value", f"score {score!r} is not a finite number at `{path}`")


class EventParser:
    """Decode and validate JSON events.

    ``threshold``: when an event carries a ``score`` but no ``prediction``,
    the prediction is ``score >= threshold``; without it such an event is
    refused. ``now`` gives the time of events without ``ts``.
    """

    def __init__(
        self,
        *,
        default_model: str = DEFAULT_MODEL,
        threshold: float | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_text_chars: int = MAX_TEXT_CHARS,
        max_future_seconds: float = MAX_FUTURE_SECONDS,
        now=time.time,
    ) -> None:
        self._decode = msgspec.json.Decoder(Event).decode
        self.default_model = default_model
        self.threshold = threshold
        self.max_event_bytes = max_event_bytes
        self.max_text_chars = max_text_chars
        self.max_future_seconds = max_future_seconds
        self._now = now
        self._latest_ts = -math.inf  # times up to this are known not to lie in the future

    def now(self) -> float:
        """The parser's clock: the time given to events without ``ts``."""
        return self._now()

    def _too_late(self, ts: float) -> bool:
        """True when ``ts`` lies more than max_future_seconds past the read time (the clock
        is read only when an event is newer than any accepted so far)."""
        if ts <= self._latest_ts:
            return False
        self._latest_ts = self._now() + self.max_future_seconds
        return ts > self._latest_ts

    def parse(self, raw: bytes | str) -> Event | Rejection:
        """Never raises: whatever ``raw`` holds, the answer is an Event or a Rejection."""
        if len(raw) > self.max_event_bytes:
            return Rejection(
                "oversized", f"event of {len(raw)} bytes exceeds the {self.max_event_bytes}-byte limit"
            )
        try:
            event = self._decode(raw)
        except msgspec.ValidationError as exc:
            text = str(exc)
            return Rejection(classify_validation_error(text), text)
        except msgspec.DecodeError as exc:
            return Rejection("not_json", f"not valid JSON: {exc}")
        except UnicodeDecodeError as exc:  # msgspec raises it for bad UTF-8 inside a string
            return Rejection("not_json", f"not valid UTF-8 inside a string ({exc.reason})")
        except UnicodeEncodeError as exc:  # a str holding a lone surrogate, which UTF-8 cannot hold
            return Rejection("not_json", f"not valid Unicode: {exc.reason} at character {exc.start}")
        except RecursionError:
            return Rejection("not_json", "JSON nested too deeply")
        try:
            return self.check(event)
        except Exception as exc:  # noqa: BLE001 - a bug in a check must cost this one event, not the batch
            return internal_error(exc)

    def _text_rejection(self, event: Event) -> Rejection | None:
        for field_name, text in (("text", event.text), ("prompt", event.prompt), ("response", event.response)):
            # Refused, not cut: a truncated response would be scored on text the model did not end with.
            if text is not None and len(text) > self.max_text_chars:
                return Rejection("oversized", f"{field_name} of {len(text)} characters exceeds the "
                                              f"{self.max_text_chars}-character limit at `$.{field_name}`")
        if event.response is not None or event.prompt is not None:
            return _generation_rejection(event)
        return None

    def check(self, event: Event) -> Event | Rejection:
        """Validate the rules a schema cannot say; normalise ts, model, prediction."""
        label = event.label
        if label is not None and label != 0 and label != 1:
            return Rejection("unknown_label", f"unknown label {label!r} (expected 0, 1 or null) at `$.label`")
        # One test on the common path (no text at all); the per-field checks only when some text is there.
        if event.text is not None or event.response is not None or event.prompt is not None:
            rejection = self._text_rejection(event)
            if rejection is not None:
                return rejection
        score = event.score
        # x - x is 0.0 for every finite float and NaN for NaN and the infinities: no call on the common path.
        if score is not None and score - score != 0.0:
            return _not_finite(score, "$.score")
        prediction = event.prediction
        if prediction is None and score is not None and self.threshold is not None:
            prediction = event.prediction = int(score >= self.threshold)
        if prediction is None and event.response is not None:
            pass  # a generation alone: checked above
        elif prediction is None:
            if event.groups is not None or score is not None:
                return Rejection(
                    "missing_field",
                    "Object missing required field `prediction` (give one, or a score and a threshold)",
                )
            if label is None:
                return Rejection(
                    "missing_field",
                    "neither a prediction (needs `prediction` and `groups`) nor an outcome (needs `label`)",
                )
        else:
            if prediction != 0 and prediction != 1:
                return _not_binary(prediction, "$.prediction")
            if event.groups is None:
                return Rejection("missing_field", "Object missing required field `groups`")
        copy = event.prediction_copy
        if copy is not None:
            if prediction is not None:
                return Rejection("bad_value", "`prediction_copy` belongs on outcomes only, not on a prediction")
            if copy.prediction != 0 and copy.prediction != 1:
                return _not_binary(copy.prediction, "$.prediction_copy.prediction")
            if copy.score is not None and not math.isfinite(copy.score):
                return _not_finite(copy.score, "$.prediction_copy.score")
        ts = event.ts
        if ts is None:
            event.ts = self._now()
        else:
            if ts.__class__ is not float:
                ts = event.ts = to_epoch_seconds(ts, 0.0)
            if not 0.0 <= ts or (ts > self._latest_ts and self._too_late(ts)):  # the call only for a new newest
                return _bad_time(ts, "$.ts", self.max_future_seconds)
        if copy is not None and (not 0.0 <= copy.ts or self._too_late(copy.ts)):
            return _bad_time(copy.ts, "$.prediction_copy.ts", self.max_future_seconds)
        if event.model is None:
            event.model = self.default_model
        return event
