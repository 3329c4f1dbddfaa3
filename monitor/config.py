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
from typing import Annotated, Literal, Union

import msgspec

Positive = Annotated[int, msgspec.Meta(ge=1)]
# Finite: msgspec's bounds let NaN through, and an infinite window or threshold disables what it bounds.
WindowSeconds = Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class ConfigError(ValueError):
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

    def __post_init__(self) -> None:
        _finite(self)


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

    def __post_init__(self) -> None:
        _finite(self)


class MonitorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Attributes to track (None: every attribute that events carry) and
    # intersections tracked jointly, e.g. [["race", "sex"]] -> "race&sex".
    attributes: Union[list[str], None] = None
    intersections: list[list[str]] = []
    count_windows: list[Positive] = msgspec.field(default_factory=lambda: [10_000])
    time_windows_seconds: list[WindowSeconds] = msgspec.field(default_factory=lambda: [3600.0])
    # Groups smaller than this are reported but take no part in alert gaps.
    min_group_size: Positive = 30
    # Groups smaller than this never leave the process as a rate.
    privacy_floor: Positive = 10
    # Attach the id of a group's latest positive prediction to its `positives`
    # counter (an OpenMetrics exemplar: event id beside group membership), once
    # the group has privacy_floor positives. False keeps every event id in.
    exemplars: bool = True
    # Distinct group label values exported per attribute; the rest are "other".
    max_groups_per_attribute: Positive = 50
    # Distinct group values held in memory per attribute; later ones are counted as "other".
    max_group_values: Positive = 1_000
    # Models tracked; predictions of further models are refused (dead-lettered, reason over_capacity).
    max_models: Positive = 100
    # Predictions held for late labels, windows and dedup, per model.
    journal_capacity: Positive = 1_000_000
    # Outcomes held while waiting for their prediction.
    early_outcome_capacity: Positive = 100_000
    drift_detector: Literal["adwin", "page_hinkley"] = "adwin"
    # Gap drift: one detector update per this many predictions of a model...
    drift_block_events: Positive = 500
    # ...over the groups with at least this many predictions in the block.
    drift_min_block_group_events: Positive = 10
    # Group-rate drift: one update per this many predictions of the group.
    drift_group_block_events: Positive = 30
    # -- breach decisions (monitor.breach) --------------------------------------
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    threshold_overrides: list[ThresholdOverride] = []
    # Chance of any false breach over the whole stream, per model and worker set.
    family_error: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.05
    # Workers sharing a stream: each decides at family_error / workers (or run
    # `fairwatch decide` on their summed counters, at the full family_error).
    workers: Positive = 1
    # Restarting blocks of the decisions: scale s restarts every
    # decision_block_events x 2^s predictions; decision_scales caps the number
    # of scales (None: a new one at each doubling of the stream, so that every
    # persistent breach is eventually declared; a cap brings that back).
    decision_block_events: Positive = 8_000
    decision_scales: Union[Annotated[int, msgspec.Meta(ge=0, le=64)], None] = None
    decision_staggers: Annotated[int, msgspec.Meta(ge=1, le=8)] = 2
    # Each block keeps counting for this many block lengths after it starts, so a
    # change just after a block's start is seen without waiting for a fresh block.
    decision_block_lifetime: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    # Decisions are re-checked after this many predictions (at a batch end)...
    decision_check_events: Positive = 4_000
    # ...or at the first batch this many seconds (wall clock) after the last
    # check, so that a slow stream is checked too.
    decision_check_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    max_decision_groups: Positive = 20
    # Attributes in the family when `attributes` is not given (discovered).
    max_attributes: Positive = 8
    # Worst-subgroup search over intersections of the configured attributes.
    subgroup_search: bool = True
    subgroup_max_order: Annotated[int, msgspec.Meta(ge=2, le=3)] = 2
    max_subgroup_cells: Positive = 64

    # Label coverage differing across groups by more than this is flagged:
    # realised rates of the groups are then not comparable.
    coverage_gap: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1

    default_model: str = "default"
    threshold: Union[float, None] = None
    max_event_bytes: Positive = 1 << 20
    max_text_chars: Positive = 20_000
    # Event times more than this past the read time are refused.
    max_future_seconds: Annotated[float, msgspec.Meta(ge=0, le=366 * 86_400)] = 86_400.0

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
        _finite(self)
        if self.privacy_floor > self.min_group_size:
            raise ValueError("privacy_floor must not exceed min_group_size")
        if max(self.count_windows, default=0) > self.journal_capacity:
            raise ValueError("a count window exceeds journal_capacity")
        for parts in self.intersections:
            if len(parts) < 2:
                raise ValueError(f"an intersection needs two or more attributes, got {parts}")
            unknown = [p for p in parts if self.attributes is not None and p not in self.attributes]
            if unknown:  # a typo would file every event under "<value>&unknown"
                raise ValueError(f"intersection {'&'.join(parts)} names {', '.join(map(repr, unknown))}, "
                                 f"which is not among the attributes {self.attributes}")
        if self.max_groups_per_attribute > self.max_group_values:
            raise ValueError("max_groups_per_attribute must not exceed max_group_values")


def _finite(struct: msgspec.Struct) -> None:
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


# Tables of the same TOML file that belong to other parts (consumers, alerts).
OTHER_TABLES = ("kafka", "alerts")


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


def load_config(path: str | Path | None = None, **overrides) -> MonitorConfig:
    """Read a TOML file (its ``[monitor]`` table or top level), then apply overrides."""
    data: dict = {}
    if path is not None:
        document = read_toml(path)
        if "monitor" in document:
            data = dict(document["monitor"])
        else:
            data = {k: v for k, v in document.items() if k not in OTHER_TABLES}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
