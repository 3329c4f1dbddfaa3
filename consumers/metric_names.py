"""Prometheus names of the consumers' own series, defined once: the Kafka worker (``fairwatch run``)
and the outcome join (``fairwatch join``).

Kept beside the adapters that export them (not in ``monitor.metric_names``):
the core knows nothing of Kafka. Label names shared with the core are
taken from its module. Rules, dashboards and tests import these names.
"""

from __future__ import annotations

from fairwatch.monitor.metric_names import REASON, STATUS, listed

__all__ = [
    "REASON", "STATUS", "TOPIC", "PARTITION", "TABLE",
    "CONSUMER_LAG", "CONSUMER_OFFSET", "CONSUMER_RECORDS", "CONSUMER_COMMITS", "FETCH_RESTARTS",
    "DLQ_MESSAGES", "DLQ_ERRORS", "FILTERED_EVENTS",
    "JOIN_OUTCOMES", "JOIN_PREDICTIONS", "JOIN_INVALID", "JOIN_PENDING", "JOIN_READY",
    "JOIN_OUTCOME_STATUSES", "JOIN_PREDICTION_STATUSES", "JOIN_TABLES", "REFERENCE",
]

# --- the Kafka worker (consumers/kafka_worker.py, `fairwatch run`) ----------------
TOPIC = "topic"
PARTITION = "partition"
# gauge {topic, partition}: high watermark minus the next offset to apply
CONSUMER_LAG = "fairwatch_consumer_lag"
# gauge {topic, partition}: next offset to apply (everything before it is applied)
CONSUMER_OFFSET = "fairwatch_consumer_offset"
# counter {topic}: records applied to the pipeline (valid, invalid or filtered)
CONSUMER_RECORDS = "fairwatch_consumer_records_total"
# counter: offset commits that succeeded
CONSUMER_COMMITS = "fairwatch_consumer_commits_total"
FETCH_RESTARTS = "fairwatch_consumer_fetch_restarts_total"
# counter {reason}: records sent to the dead-letter topic (reason: the core's REJECTION_REASONS)
DLQ_MESSAGES = "fairwatch_dlq_messages_total"
# counter: dead-letter deliveries the broker refused (logged, not retried)
DLQ_ERRORS = "fairwatch_dlq_errors_total"
# counter: predictions of models outside the --model filter, skipped
FILTERED_EVENTS = "fairwatch_filtered_events_total"

# --- the outcome join (consumers/outcome_join.py, `fairwatch join`) -------------
TABLE = "table"
JOIN_OUTCOMES = "fairwatch_join_outcomes_total"  # status: JOIN_OUTCOME_STATUSES
JOIN_PREDICTIONS = "fairwatch_join_predictions_total"  # status: JOIN_PREDICTION_STATUSES
JOIN_INVALID = "fairwatch_join_invalid_records_total"
JOIN_PENDING = "fairwatch_join_pending"  # table: entries held in predictions | outcomes (early outcomes)
JOIN_READY = "fairwatch_join_ready"  # 1 once the tables are recovered and partitions assigned, 0 while rebalancing
JOIN_OUTCOME_STATUSES = ("joined", "early", "duplicate", "conflicting", "orphaned")
JOIN_PREDICTION_STATUSES = ("forwarded", "labeled_on_arrival", "duplicate", "expired")
JOIN_TABLES = ("predictions", "outcomes")


# (names, type, labels, meaning), for the metric reference, docs/metrics.md (fairwatch.metric_reference).
REFERENCE: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    ((JOIN_OUTCOMES,), "counter", listed(STATUS, JOIN_OUTCOME_STATUSES),
     "`fairwatch join`: outcomes by fate (orphaned: no prediction within the TTL)"),
    ((JOIN_PREDICTIONS,), "counter", listed(STATUS, JOIN_PREDICTION_STATUSES), "`fairwatch join`: predictions by fate"),
    ((JOIN_INVALID,), "counter", "", "`fairwatch join`: records passed through unparsed"),
    ((JOIN_PENDING,), "gauge", listed(TABLE, JOIN_TABLES), "`fairwatch join`: entries held"),
    ((JOIN_READY,), "gauge", "", "`fairwatch join`: 1 once its tables are recovered and its partitions "
     "assigned, 0 before and while it rebalances (its health check)"),
    ((CONSUMER_LAG, CONSUMER_OFFSET), 'gauge', f'{TOPIC}, {PARTITION}',
     'Kafka worker: lag, and the next offset to apply'),
    ((CONSUMER_RECORDS,), 'counter', TOPIC,
     'records applied'),
    ((CONSUMER_COMMITS,), 'counter', '',
     'offset commits'),
    ((FETCH_RESTARTS,), 'counter', '',
     'fetch processes that died and were replaced (the worker resumes where it stood)'),
    ((DLQ_MESSAGES, DLQ_ERRORS), 'counter', REASON,
     'dead-lettered records (counted once the broker has them, at the next commit), refused dead-letter deliveries'),
    ((FILTERED_EVENTS,), 'counter', '',
     'predictions of models outside `--model` (and outcomes whose prediction copy names one)'),
)
