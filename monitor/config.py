"""fairwatch configuration: one TOML file (or defaults), parsed once at the edge.

>>> config = parse_config({"attributes": ["race"], "min_group_size": 50})
>>> config.min_group_size, config.privacy_floor
(50, 10)
>>> parse_config({"min_group_size": "big"})
Traceback (most recent call last):
...
monitor.config.ConfigError: Expected `int`, got `str` - at `$.min_group_size`
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

import msgspec

Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(ValueError):
    """A configuration problem, worded for one line on stderr."""


class MonitorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Attributes to track (None: every attribute that events carry) and
    # intersections tracked jointly, e.g. [["race", "sex"]] -> "race&sex".
    attributes: Union[list[str], None] = None
    intersections: list[list[str]] = []
    count_windows: list[Positive] = msgspec.field(default_factory=lambda: [10_000])
    time_windows_seconds: list[PositiveFloat] = msgspec.field(default_factory=lambda: [3600.0])
    # Groups smaller than this are reported but take no part in alert gaps.
    min_group_size: Positive = 30
    # Groups smaller than this never leave the process as a rate.
    privacy_floor: Positive = 10
    # Distinct group label values exported per attribute; the rest are "other".
    max_groups_per_attribute: Positive = 50
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
    default_model: str = "default"
    threshold: Union[float, None] = None
    max_event_bytes: Positive = 1 << 20
    max_text_chars: Positive = 20_000

    def __post_init__(self) -> None:
        if self.privacy_floor > self.min_group_size:
            raise ValueError("privacy_floor must not exceed min_group_size")
        if max(self.count_windows, default=0) > self.journal_capacity:
            raise ValueError("a count window exceeds journal_capacity")
        for parts in self.intersections:
            if len(parts) < 2:
                raise ValueError(f"an intersection needs two or more attributes, got {parts}")


def parse_config(data: dict) -> MonitorConfig:
    try:
        return msgspec.convert(data, MonitorConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path | None = None, **overrides) -> MonitorConfig:
    """Read a TOML file (its ``[monitor]`` table or top level), then apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            document = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from None
        data = dict(document.get("monitor", document))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
