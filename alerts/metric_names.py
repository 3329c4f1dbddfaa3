"""Prometheus names of the trigger's own series (``fairwatch trigger``: incidents and webhook
deliveries), defined once.

Kept beside the trigger (not in ``monitor.metric_names``): the core knows
nothing of alerting. Rules, dashboards and tests import these names.
"""

from __future__ import annotations

__all__ = ["STATE", "RESULT", "INCIDENTS", "TRIGGER_DELIVERIES", "TRIGGER_JOBS", "REFERENCE"]

STATE = "state"
RESULT = "result"
INCIDENTS = "fairwatch_incidents"  # gauge {state}: incidents in each state
TRIGGER_DELIVERIES = "fairwatch_trigger_deliveries_total"  # counter {result}: webhook calls
TRIGGER_JOBS = "fairwatch_trigger_jobs_started_total"  # counter: fine-tune jobs started


# (names, type, labels, meaning), for the metric reference, docs/metrics.md (fairwatch.metric_reference).
REFERENCE: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    ((INCIDENTS,), 'gauge', STATE,
     "the trigger's incidents by state (its own `/metrics`)"),
    ((TRIGGER_DELIVERIES,), 'counter', f'{RESULT} (`opened`, `duplicate`, `ignored`, `rejected`, `refused_labels`, `failed`)',
     'webhook alerts received'),
    ((TRIGGER_JOBS,), 'counter', '',
     'fine-tune jobs started'),
)
