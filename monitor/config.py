"""fairwatch configuration: one TOML file (or defaults), parsed once at the edge.

>>> config = parse_config({"attributes": ["race"], "min_group_size": 50})
>>> config.min_group_size, config.privacy_floor
(50, 10)
>>> parse_config({"min_group_size": "big"})
Traceback (most recent call last):
...
fairwatch.monitor.config.ConfigError: Expected `int`, got `str` - at `$.min_group_size`
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

import msgspec

from fairwatch.monitor.errors import FairwatchError

Positive = Annotated[int, msgspec.Meta(ge=1)]
# An intersection's events are keyed by their attributes' codes packed into one int64, 20 bits each
# (monitor.group_metrics): three attributes, and a million values per attribute, fit.
MAX_INTERSECTION_ATTRIBUTES = 3
MAX_GROUP_VALUES = 1_000_000
# Finite: msgspec's bounds let NaN through, and an infinite window or threshold disables what it bounds.
WindowSeconds = Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class ConfigError(FairwatchError, ValueError):
    """A configuration problem, worded for one line on stderr."""


class Thresholds(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Breach thresholds: a difference breaches above, a ratio below."""

    demographic_parity_difference: Fraction = 0.1
    equalized_odds_difference: Fraction = 0.1
    demographic_parity_ratio: Fraction = 0.8
    # LLM generations (monitor.generation.decisions): differences of the per-group fractions of
    # refused, negative (VADER) and toxic (the response classifier) responses.
    refusal_rate_difference: Fraction = 0.1
    negative_share_difference: Fraction = 0.1
    toxic_share_difference: Fraction = 0.1

    FIELD_HELP: ClassVar[dict[str, str]] = {
        "demographic_parity_difference": "a selection-rate difference between groups above this breaches",
        "equalized_odds_difference": "a TPR or FPR difference between groups above this breaches",
        "demographic_parity_ratio": "a selection-rate ratio below this breaches (the 4/5 rule at 0.8)",
        "refusal_rate_difference": "LLM generations: a difference in the share of refused responses between "
                                   "groups above this breaches",
        "negative_share_difference": "LLM generations: a difference in the share of negative (VADER) responses "
                                     "above this breaches",
        "toxic_share_difference": "LLM generations: a difference in the share of toxic responses (--response-model) "
                                  "above this breaches",
    }

    def __post_init__(self) -> None:
        require_finite(self)


class ThresholdOverride(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Thresholds for one model and/or attribute (None: any)."""

    model: Union[str, None] = None
    attribute: Union[str, None] = None
    demographic_parity_difference: Union[Fraction, None] = None
    equalized_odds_difference: Union[Fraction, None] = None
    demographic_parity_ratio: Union[Fraction, None] = None
    refusal_rate_difference: Union[Fraction, None] = None
    negative_share_difference: Union[Fraction, None] = None
    toxic_share_difference: Union[Fraction, None] = None

    FIELD_HELP: ClassVar[dict[str, str]] = {
        "model": "the model this override applies to (unset: every model)",
        "attribute": "the attribute this override applies to (unset: every attribute)",
        "demographic_parity_difference": "replaces thresholds.demographic_parity_difference (unset: keep it)",
        "equalized_odds_difference": "replaces thresholds.equalized_odds_difference (unset: keep it)",
        "demographic_parity_ratio": "replaces thresholds.demographic_parity_ratio (unset: keep it)",
        "refusal_rate_difference": "replaces thresholds.refusal_rate_difference (unset: keep it)",
        "negative_share_difference": "replaces thresholds.negative_share_difference (unset: keep it)",
        "toxic_share_difference": "replaces thresholds.toxic_share_difference (unset: keep it)",
    }

    def __post_init__(self) -> None:
        require_finite(self)


class MonitorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The monitor's settings: a ``[monitor]`` table, or the top-level keys of a file without one."""

    attributes: Union[list[str], None] = None
    intersections: list[list[str]] = []
    count_windows: list[Positive] = msgspec.field(default_factory=lambda: [10_000])
    time_windows_seconds: list[WindowSeconds] = msgspec.field(default_factory=lambda: [3600.0])
    min_group_size: Positive = 30
    privacy_floor: Positive = 10
    exemplars: bool = True
    max_groups_per_attribute: Positive = 50
    max_group_values: Annotated[int, msgspec.Meta(ge=1, le=MAX_GROUP_VALUES)] = 1_000
    max_models: Positive = 100
    journal_capacity: Positive = 1_000_000
    early_outcome_capacity: Positive = 100_000
    drift_detector: Literal["adwin", "page_hinkley"] = "adwin"
    drift_block_events: Positive = 500
    drift_min_block_group_events: Positive = 10
    drift_group_block_events: Positive = 30
    # -- breach decisions (monitor.breach) --------------------------------------
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    threshold_overrides: list[ThresholdOverride] = []
    family_error: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.05
    workers: Positive = 1
    decision_block_events: Positive = 8_000
    decision_scales: Union[Annotated[int, msgspec.Meta(ge=0, le=64)], None] = None
    decision_staggers: Annotated[int, msgspec.Meta(ge=1, le=8)] = 2
    decision_block_lifetime: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    decision_check_events: Positive = 4_000
    decision_check_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    max_decision_groups: Positive = 20
    max_attributes: Positive = 8
    subgroup_search: bool = True
    subgroup_max_order: Annotated[int, msgspec.Meta(ge=2, le=3)] = 2
    max_subgroup_cells: Positive = 64
    coverage_gap: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    default_model: str = "default"
    threshold: Union[float, None] = None
    max_event_bytes: Positive = 1 << 20
    max_text_chars: Positive = 20_000
    max_future_seconds: Annotated[float, msgspec.Meta(ge=0, le=366 * 86_400)] = 86_400.0

    # One line per setting: the generated reference (docs/configuration.md) and the flags' help read it.
    FIELD_HELP: ClassVar[dict[str, str]] = {
        "attributes": "protected attributes to track (unset: every attribute that events carry)",
        "intersections": "attribute combinations tracked jointly, e.g. [[\"race\", \"sex\"]] is attribute "
                         "\"race&sex\"",
        "count_windows": "sliding windows over the last N predictions of a model",
        "time_windows_seconds": "sliding windows over the last N seconds of event time",
        "min_group_size": "groups smaller than this are reported but take no part in alert gaps",
        "privacy_floor": "groups smaller than this never leave the process as a rate",
        "exemplars": "attach the id of a group's latest positive prediction to its `positives` counter (an "
                     "OpenMetrics exemplar), once the group has privacy_floor positives; false keeps every event "
                     "id in",
        "max_groups_per_attribute": "distinct group label values exported per attribute; the rest are \"other\"",
        "max_group_values": "distinct group values held in memory per attribute; later ones count as \"other\"",
        "max_models": "models tracked; predictions of further models are refused (dead-lettered, reason "
                      "over_capacity)",
        "journal_capacity": "predictions held per model for late labels, windows and dedup",
        "early_outcome_capacity": "outcomes held while waiting for their prediction",
        "drift_detector": "the drift detector of gaps and group rates: adwin or page_hinkley",
        "drift_block_events": "gap drift: one detector update per this many predictions of a model",
        "drift_min_block_group_events": "gap drift: only groups with at least this many predictions in the "
                                        "block take part",
        "drift_group_block_events": "group-rate drift: one update per this many predictions of the group",
        "thresholds": "breach thresholds, a [monitor.thresholds] table (keys below)",
        "threshold_overrides": "thresholds for one model and/or attribute, [[monitor.threshold_overrides]] "
                               "tables (keys below); later entries win",
        "family_error": "chance of any false breach over the whole stream, per model and worker set",
        "workers": "workers sharing a stream: each decides at family_error / workers (or run `fairwatch "
                   "decide` on their summed counters, at the full family_error)",
        "decision_block_events": "restarting blocks of the decisions: scale s restarts every "
                                 "decision_block_events x 2^s predictions",
        "decision_scales": "cap on the number of block scales (unset: a new one at each doubling of the "
                           "stream, so that every persistent breach is eventually declared)",
        "decision_staggers": "copies of each block scale, offset by a fraction of a block",
        "decision_block_lifetime": "each block keeps counting for this many block lengths after it starts, so a "
                                   "change just after a block's start is seen without waiting for a fresh block",
        "decision_check_events": "decisions are re-checked after this many predictions (at a batch end)",
        "decision_check_seconds": "...or at the first batch this many seconds (wall clock) after the last check, "
                                  "so that a slow stream is checked too",
        "max_decision_groups": "groups per attribute in the decisions' family: the first to reach min_group_size; later ones take no part",
        "max_attributes": "attributes in the decisions' family when `attributes` is not set (discovered)",
        "subgroup_search": "search the worst subgroup over intersections of the configured attributes",
        "subgroup_max_order": "attributes per searched intersection at most (2 or 3)",
        "max_subgroup_cells": "intersection cells the subgroup search tracks at most",
        "coverage_gap": "label coverage differing across groups by more than this is flagged: the groups' "
                        "realised rates are then not comparable",
        "default_model": "model name of events that carry none",
        "threshold": "prediction = score >= threshold when an event has no prediction (unset: an event "
                     "needs a prediction)",
        "max_event_bytes": "larger encoded events are refused (dead-lettered)",
        "max_text_chars": "longer texts are refused (dead-lettered)",
        "max_future_seconds": "event times more than this past the read time are refused",
    }

    def threshold_for(self, model: str, attribute: str, metric: str) -> float:
        value = getattr(self.thresholds, metric)
        for override in self.threshold_overrides:
            if override.model in (None, model) and override.attribute in (None, attribute):
                value = getattr(override, metric) if getattr(override, metric) is not None else value
        return value

    def search_intersections(self) -> list[tuple[str, ...]]:
        """Attribute combinations the worst-subgroup search tracks."""
        from itertools import combinations

        if not self.subgroup_search or not self.attributes or len(self.attributes) < 2:
            return []
        singles = [a for a in self.attributes if "&" not in a]
        configured = {tuple(p) for p in self.intersections}
        orders = range(2, min(self.subgroup_max_order, len(singles)) + 1)
        return [c for k in orders for c in combinations(singles, k) if c not in configured]

    def __post_init__(self) -> None:
        require_finite(self)
        if self.privacy_floor > self.min_group_size:
            raise ValueError("privacy_floor must not exceed min_group_size")
        if max(self.count_windows, default=0) > self.journal_capacity:
            raise ValueError("a count window exceeds journal_capacity")
        for parts in self.intersections:
            if len(parts) < 2:
                raise ValueError(f"an intersection needs two or more attributes, got {parts}")
            if any(not part.strip() for part in parts) or len(set(parts)) < len(parts):
                raise ValueError(f"intersection {'&'.join(parts)} needs distinct, non-empty attribute names")
            if len(parts) > MAX_INTERSECTION_ATTRIBUTES:
                raise ValueError(f"intersection {'&'.join(parts)} joins {len(parts)} attributes; at most "
                                 f"{MAX_INTERSECTION_ATTRIBUTES} are tracked jointly")
            unknown = [p for p in parts if self.attributes is not None and p not in self.attributes]
            if unknown:  # a typo would file every event under "<value>&unknown"
                raise ValueError(f"intersection {'&'.join(parts)} names {', '.join(map(repr, unknown))}, "
                                 f"which is not among the attributes {self.attributes}")
        if self.max_groups_per_attribute > self.max_group_values:
            raise ValueError("max_groups_per_attribute must not exceed max_group_values")


def require_finite(struct: msgspec.Struct) -> None:
    """Refuse NaN and infinities in a struct's float fields (msgspec's bounds let NaN through)."""
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value}")


class ModelThresholds:
    """``(attribute, metric) -> threshold`` for one model: what the breach
    decisions call. A class, not a closure, so that a pipeline's state pickles."""

    def __init__(self, config: MonitorConfig, model: str) -> None:
        self.config = config
        self.model = model

    def __call__(self, attribute: str, metric: str) -> float:
        return self.config.threshold_for(self.model, attribute, metric)


# Settings that shape the counts a snapshot holds: a worker refuses a snapshot written under others.
STRUCTURAL_SETTINGS = ("attributes", "intersections", "count_windows", "time_windows_seconds", "journal_capacity",
                       "subgroup_search", "subgroup_max_order")
# Settings of the breach decisions and drift detectors: when they change, those restart; the counts stay.
DECISION_SETTINGS = ("family_error", "workers", "decision_block_events", "decision_scales", "decision_staggers", "decision_block_lifetime",
                     "decision_check_events", "decision_check_seconds", "max_decision_groups", "max_attributes",
                     "max_subgroup_cells",
                     "min_group_size", "drift_detector", "drift_block_events", "drift_min_block_group_events",
                     "drift_group_block_events")


def changed_settings(old: dict, new: MonitorConfig, keys: tuple[str, ...]) -> list[str]:
    """Which of ``keys`` differ between a config's builtins (as msgspec.to_builtins gives) and ``new``."""
    current = msgspec.to_builtins(new)
    return [k for k in keys if k in current and old.get(k, current[k]) != current[k]]


# The one rule for a fairwatch TOML file, which every command reads whole: the core's settings are either a
# [monitor] table or, without one, the file's top-level keys; [kafka] (the Kafka commands), [alerts] (the
# rules, dashboards and trigger) and [join] are tables beside them. Any other table is an error.
TABLES = ("monitor", "kafka", "alerts", "join")
OTHER_TABLES = ("kafka", "alerts", "join")
_KNOWN_TABLES = ", ".join(f"[{name}]" for name in TABLES)


def monitor_table(document: dict) -> dict:
    """The monitor settings of a whole TOML document, by the rule above.

    >>> monitor_table({"min_group_size": 5, "kafka": {"group_id": "g"}})
    {'min_group_size': 5}
    >>> monitor_table({"monitor": {"min_group_size": 5}, "min_group_size": 6})
    Traceback (most recent call last):
    ...
    fairwatch.monitor.config.ConfigError: min_group_size: a top-level key beside a [monitor] table (put it in [monitor])
    """
    if "monitor" in document:
        stray = [key for key in document if key not in TABLES]
        if stray:
            what = "table" if all(isinstance(document[k], dict) for k in stray) else "key"
            raise ConfigError(f"{', '.join(stray)}: a top-level {what} beside a [monitor] table "
                              f"({'known tables: ' + _KNOWN_TABLES if what == 'table' else 'put it in [monitor]'})")
        table = document["monitor"]
        if not isinstance(table, dict):
            raise ConfigError("[monitor] must be a table")
        return dict(table)
    unknown = [key for key, value in document.items()
               if isinstance(value, dict) and key not in OTHER_TABLES and key not in MonitorConfig.__struct_fields__]
    if unknown:
        raise ConfigError(f"unknown table [{unknown[0]}] (known: {_KNOWN_TABLES}, or the [monitor] "
                          "keys at the top level)")
    return {key: value for key, value in document.items() if key not in OTHER_TABLES}


def parse_config(data: dict) -> MonitorConfig:
    try:
        return msgspec.convert(data, MonitorConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None


def read_toml(path: str | Path | None) -> dict:
    """The whole TOML document (empty without a path); every problem a one-line ConfigError.

    One file holds every part's table: ``[monitor]``, ``[kafka]``, ``[alerts]``.
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


def located(path: str | Path | None, table: str | None = None) -> str:
    """The start of an error line: which file and which table (``bad.toml: [kafka]: ``)."""
    return "".join(part for part in (f"{path}: " if path else "", f"[{table}]: " if table else ""))


def load_config(path: str | Path | None = None, **overrides) -> MonitorConfig:
    """Read a TOML file's monitor settings (``monitor_table``), then apply overrides (None: not given)."""
    document = read_toml(path)
    try:
        data = monitor_table(document)
    except ConfigError as exc:
        raise ConfigError(f"{located(path)}{exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{located(path, 'monitor')}{exc}") from None
