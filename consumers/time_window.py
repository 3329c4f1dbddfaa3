"""The time window of ``fairwatch export`` and of a job's ``{from}``/``{to}``: parsed once, at the edge.

>>> window = TimeWindow.parse("2026-11-21T00:00:00Z", "1795392000")
>>> window.start_seconds, window.end_seconds, window.describe()
(1795219200.0, 1795392000.0, '2026-11-21T00:00:00Z to 2026-11-23T00:00:00Z')
>>> TimeWindow.parse("yesterday", "1795392000")
Traceback (most recent call last):
...
fairwatch.consumers.time_window.TimeWindowError: --from 'yesterday' is neither ISO-8601 (2026-11-22T10:00:00Z) nor epoch seconds
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from fairwatch.monitor.errors import FairwatchError


END_OF_YEAR_9999 = 253_402_300_800.0  # epoch seconds of 10000-01-01T00:00:00Z


class TimeWindowError(FairwatchError, ValueError):
    """A time or window the user gave that cannot be read: one line for the CLI."""


def parse_time(text: str, flag: str) -> float:
    """Epoch seconds from ISO-8601 (a naive time is UTC, as in events) or from epoch seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise TimeWindowError(f"{flag} {text!r} is neither ISO-8601 (2026-11-22T10:00:00Z) nor epoch seconds") \
                from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = moment.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise TimeWindowError(f"{flag} {text!r} is not a time since 1970")
    if seconds >= END_OF_YEAR_9999:  # past what a date can show (and what an event can carry)
        raise TimeWindowError(f"{flag} {text!r} lies after the year 9999")
    return seconds


def iso(seconds: float) -> str:
    """UTC ISO-8601 with a Z, whole seconds unless the time has a fraction."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    text = moment.isoformat(timespec="seconds" if seconds == int(seconds) else "milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class TimeWindow:
    """From ``start_seconds`` to ``end_seconds``, both included (epoch seconds)."""

    start_seconds: float
    end_seconds: float

    def __post_init__(self) -> None:
        if self.start_seconds > self.end_seconds:
            raise TimeWindowError(f"--from {iso(self.start_seconds)} is after --to {iso(self.end_seconds)}")

    @classmethod
    def parse(cls, start: str, end: str) -> TimeWindow:
        return cls(parse_time(start, "--from"), parse_time(end, "--to"))

    @property
    def start_ms(self) -> int:
        """Kafka record timestamps are whole milliseconds; the first one inside the window."""
        return math.ceil(self.start_seconds * 1000)

    @property
    def end_ms(self) -> int:
        """The last whole millisecond inside the window."""
        return math.floor(self.end_seconds * 1000)

    def describe(self) -> str:
        return f"{iso(self.start_seconds)} to {iso(self.end_seconds)}"


__all__ = ["TimeWindow", "TimeWindowError", "iso", "parse_time"]
