"""The library API: a streaming fairness monitor you feed events and read, without the CLI or Kafka.

River's shape: ``update`` one event (or ``update_many``), read with ``report()`` (the JSON-able dict the CLI
prints) or ``snapshot()`` (typed and immutable). Events are dicts of the event contract or encoded JSON lines.

>>> from fairwatch import Monitor
>>> monitor = Monitor(attributes=["sex"], min_group_size=2, privacy_floor=1)
>>> monitor.update({"event_id": "1", "prediction": 1, "groups": {"sex": "F"}, "label": 1})
>>> monitor.update_many([
...     {"event_id": "2", "prediction": 0, "groups": {"sex": "F"}, "label": 1},
...     {"event_id": "3", "prediction": 1, "groups": {"sex": "M"}, "label": 0},
...     b'{"event_id": "4", "prediction": 1, "groups": {"sex": "M"}, "label": 1}',
...     {"event_id": "5", "prediction": 2, "groups": {"sex": "M"}}])
[(3, Rejection(reason='bad_value', message='prediction must be 0 or 1, got 2 at `$.prediction`'))]
>>> sex = monitor.snapshot().attributes["sex"]
>>> sex.groups["F"].rates["selection_rate"], sex.groups["M"].rates["selection_rate"]
(0.5, 1.0)
>>> sex.gaps["demographic_parity_difference"]
0.5
>>> monitor.update({"event_id": "1", "label": 0})  # a second, different label for event 1
>>> monitor.report()["outcomes"]["conflicting"]
1

Generation events (an LLM's ``response``, optionally its ``prompt``) are scored per group:

>>> chat = Monitor(attributes=["sex"], min_group_size=2, privacy_floor=1)
>>> chat.update_many([{"event_id": str(i), "model": "chat", "groups": {"sex": sex}, "response": response}
...                   for i, (sex, response) in enumerate([("F", "I cannot assist with that."), ("F", "Sure!"),
...                                                        ("M", "Sure!"), ("M", "Glad to help.")])])
[]
>>> sex = chat.snapshot().generation["sex"]
>>> sex.groups["F"].rates["refusal_rate"], sex.gaps["refusal_rate_difference"]
(0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import msgspec

from fairwatch.monitor.config import MonitorConfig, parse_config
from fairwatch.monitor.errors import first_line
from fairwatch.monitor.events import Event, Rejection
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report
from fairwatch.monitor.stages import Stage

EventInput = Mapping | bytes | str


def _numbers(event: Mapping, path: str = "$"):
    """(path, value) of the float fields of an event and of the prediction it carries."""
    for key, value in event.items():
        if isinstance(value, float):
            yield f"{path}.{key}", value
        elif key == "prediction_copy" and isinstance(value, Mapping):
            yield from _numbers(value, f"{path}.{key}")


@dataclass(frozen=True)
class GroupSnapshot:
    """One group since start: counts, Fairlearn-named rates (None where undefined) and their 95% intervals."""

    name: str
    predictions: int
    positives: int
    labeled: int
    rates: Mapping[str, float | None]
    intervals: Mapping[str, tuple[float | None, float | None]]
    below_min_size: bool
    below_privacy_floor: bool


@dataclass(frozen=True)
class AttributeSnapshot:
    """One protected attribute: its groups and the gaps between them (over every group, and over the
    groups large enough to take part in alerts)."""

    name: str
    groups: Mapping[str, GroupSnapshot]
    gaps: Mapping[str, float | None]
    alert_gaps: Mapping[str, float | None]


@dataclass(frozen=True)
class GenerationGroupSnapshot:
    """One group's generated responses since start: counts, ``refusal_rate``, ``negative_share``,
    ``mean_sentiment`` and ``sentiment_distance`` (W1 to the rest) in ``rates``, 95% intervals of the first three."""

    name: str
    responses: int
    refusals: int
    negative: int
    rates: Mapping[str, float | None]
    intervals: Mapping[str, tuple[float | None, float | None]]
    below_min_size: bool
    below_privacy_floor: bool


@dataclass(frozen=True)
class GenerationAttributeSnapshot:
    """One protected attribute's generation statistics: its groups and the gaps between groups with at least
    ``min_group_size`` responses (``monitor.metric_names.GENERATION_GAP_METRICS``)."""

    name: str
    groups: Mapping[str, GenerationGroupSnapshot]
    gaps: Mapping[str, float | None]


@dataclass(frozen=True)
class Breach:
    """A breach the anytime-valid decisions declared."""

    attribute: str
    metric: str
    threshold: float
    details: Mapping  # the report's alert entry: the groups, the bounds, when it was declared


@dataclass(frozen=True)
class ModelSnapshot:
    model: str | None
    events: int
    invalid: int
    duplicates: int
    attributes: Mapping[str, AttributeSnapshot]
    breaches: tuple[Breach, ...]
    # LLM responses, since start (empty for a model without generation events)
    generation: Mapping[str, GenerationAttributeSnapshot] = field(default_factory=lambda: MappingProxyType({}))


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


# Entries of a report's group that are not rates.
_NOT_RATES = {"n", "positives", "labeled", "ci", "below_min_size", "below_privacy_floor", "estimated",
              "calibration_error", "label_delay_seconds"}


def _attribute(name: str, body: dict) -> AttributeSnapshot:
    groups = {
        group: GroupSnapshot(
            name=group, predictions=entry["n"], positives=entry["positives"], labeled=entry["labeled"],
            rates=_frozen({k: v for k, v in entry.items() if k not in _NOT_RATES}),
            intervals=_frozen({k: tuple(v) for k, v in entry["ci"].items()}),
            below_min_size=entry["below_min_size"], below_privacy_floor=entry["below_privacy_floor"],
        )
        for group, entry in body["groups"].items()
    }
    return AttributeSnapshot(name, _frozen(groups), _frozen(body["gaps"]), _frozen(body["alert_gaps"]))


_GENERATION_RATES = ("refusal_rate", "negative_share", "mean_sentiment", "sentiment_distance")


def _generation_attribute(name: str, body: dict) -> GenerationAttributeSnapshot:
    groups = {
        group: GenerationGroupSnapshot(
            name=group, responses=entry["responses"], refusals=entry["refusals"], negative=entry["negative"],
            rates=_frozen({k: entry[k] for k in _GENERATION_RATES}),
            intervals=_frozen({k: tuple(v) for k, v in entry["ci"].items()}),
            below_min_size=entry["below_min_size"], below_privacy_floor=entry["below_privacy_floor"],
        )
        for group, entry in body["groups"].items()
    }
    return GenerationAttributeSnapshot(name, _frozen(groups), _frozen({m: g["value"] for m, g in body["alert_gaps"].items()}))


class Monitor:
    """Feed prediction, generation and outcome events; read per-group rates, gaps and breach decisions.

    ``config`` (a :class:`MonitorConfig`) or keyword settings of one (``attributes=["race"]``...).
    ``stages``: steps run over every batch that add derived models (:mod:`monitor.stages`: the
    counterfactual scorer, a shadow candidate).
    """

    def __init__(self, config: MonitorConfig | None = None, *, stages: Iterable[Stage] = (), **settings) -> None:
        if config is not None and settings:
            raise TypeError("give a MonitorConfig or settings, not both")
        self.config = config if config is not None else parse_config(settings)
        self.pipeline = Pipeline(self.config, stages=stages)
        self._encode = msgspec.json.encode

    def update(self, event: EventInput) -> Rejection | None:
        """Apply one event; return its Rejection if it was refused (nothing raises for bad input)."""
        rejected = self.update_many([event])
        return rejected[0][1] if rejected else None

    def update_many(self, events: Iterable[EventInput]) -> list[tuple[int, Rejection]]:
        """Apply a batch (much cheaper per event than ``update``); return (position, Rejection) of refusals."""
        parse = self.pipeline.parser.parse
        parsed = [parse(e) if isinstance(e, (bytes, str)) else self._parse_mapping(e) for e in events]
        return self.pipeline.process_events(parsed).rejected

    def _parse_mapping(self, event: Mapping) -> Event | Rejection:
        """A dict event, through the same parser as a JSON line. JSON has no NaN (msgspec would write null,
        silently dropping a score or giving a time of now), so non-finite numbers are refused first."""
        for path, value in _numbers(event):
            if value - value != 0.0:  # NaN or an infinity
                return Rejection("bad_value", f"{path.rsplit('.', 1)[1]} {value!r} is not a finite number at `{path}`")
        try:
            line = self._encode(event)
        except (TypeError, ValueError) as exc:  # an object JSON cannot hold; a lone surrogate in a string
            return Rejection("not_json", f"cannot be written as JSON: {first_line(exc)}")
        return self.pipeline.parser.parse(line)

    def report(self, model: str | None = None) -> dict:
        """The JSON-able report ``fairwatch replay --report json`` prints."""
        return build_report(self.pipeline, model)

    def snapshot(self, model: str | None = None) -> ModelSnapshot:
        """Since-start state of one model (default: the first seen), typed and immutable."""
        report = self.report(model)
        return ModelSnapshot(
            model=report["model"], events=report["events"], invalid=report["invalid"],
            duplicates=report["duplicates"],
            attributes=_frozen({a: _attribute(a, body) for a, body in report["attributes"].items()}),
            breaches=tuple(Breach(a["attribute"], a["metric"], a["threshold"], _frozen(a))
                           for a in report["alerts"]),
            generation=_frozen({a: _generation_attribute(a, body)
                                for a, body in report.get("generation", {}).get("all", {}).items()}),
        )


__all__ = ["AttributeSnapshot", "Breach", "Event", "GenerationAttributeSnapshot", "GenerationGroupSnapshot",
           "GroupSnapshot", "Monitor", "ModelSnapshot", "Rejection"]
