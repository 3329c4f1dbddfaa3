"""The ``[join]`` table: how ``fairwatch join`` keeps its tables and its group membership.

The brokers, topics of the source events and security come from ``[kafka]``;
this table holds what only the join has. Flags of ``fairwatch join`` win.

>>> options = msgspec.convert({"ttl_seconds": 3600, "exit_on_stall": True}, JoinOptions)
>>> options.ttl_seconds, options.exit_on_stall, options.labeled_topic
(3600.0, True, 'fairwatch.labeled')
>>> msgspec.convert({"ttl_seconds": 0}, JoinOptions)
Traceback (most recent call last):
...
msgspec.ValidationError: Expected `float` > 0.0 - at `$.ttl_seconds`
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

import msgspec

from fairwatch.consumers.kafka_config import NonEmpty, Positive, Topic, between

__all__ = ["JoinOptions", "JOIN_FLAG_KEYS"]

# Finite: TOML allows inf, which would mean never commit or never sweep. Ten years is past any real setting.
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 24 * 3600)]


class JoinOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[join]`` table: what ``fairwatch join`` writes, how long it waits, and how it stays in its group."""

    labeled_topic: Topic = "fairwatch.labeled"
    app_id: NonEmpty = "fairwatch-join"
    ttl_seconds: PositiveSeconds = 7 * 24 * 3600.0
    sweep_seconds: Union[PositiveSeconds, None] = None
    commit_interval_seconds: PositiveSeconds = 2.0
    # Kafka's consumer defaults (45 s session, 300 s poll interval) and Faust's rebalance timeout: the poll
    # interval must stay well above the slowest batch of a loaded machine (docs/kafka.md, the join's section).
    session_timeout_ms: between(1_000, 3_600_000) = 45_000
    rebalance_timeout_ms: between(1_000, 86_400_000) = 60_000
    max_poll_interval_ms: between(1_000, 86_400_000) = 300_000
    stall_warning_seconds: PositiveSeconds = 60.0
    exit_on_stall: bool = False
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    producer_max_batch_size: Union[Positive, None] = None

    DOC_DEFAULTS: ClassVar[dict[str, str]] = {"sweep_seconds": "ttl / 10, between 0.5 and 60",
                                              "producer_max_batch_size": "Faust's (16384)"}
    FIELD_HELP: ClassVar[dict[str, str]] = {
        "labeled_topic": "topic the join writes for the worker (`fairwatch run --predictions-topic` reads it)",
        "app_id": "Faust app id: the join's consumer group and the prefix of its changelog topics",
        "ttl_seconds": "wall-clock seconds an entry waits for its other half, from its first arrival at the join; "
                       "then an early outcome is counted orphaned, a prediction expired",
        "sweep_seconds": "seconds between TTL sweeps",
        "commit_interval_seconds": "seconds between offset commits",
        "session_timeout_ms": "group session timeout: a crashed join's partitions wait this long",
        "rebalance_timeout_ms": "how long a rebalance waits for members",
        "max_poll_interval_ms": "longest time between two fetches before the member leaves its group; keep it well "
                                "above the slowest batch on a loaded machine",
        "stall_warning_seconds": "log one warning when the join stays not ready (rebalancing, or dropped from its "
                                 "group) this long",
        "exit_on_stall": "exit with status 75 when dropped from the group and not rejoining for the stall warning's "
                         "time plus the rebalance timeout, for a supervisor to restart the join",
        "auto_offset_reset": "where a new join group starts: earliest or latest",
        "producer_max_batch_size": "largest record batch produced, in bytes; 1 = one record per batch, needed on "
                                   "Tansu so that a restarted join recovers its whole changelog",
    }


# The join's flags of the same names override these keys (a flag not given leaves the file's value).
JOIN_FLAG_KEYS = tuple(field for field in JoinOptions.__struct_fields__)
