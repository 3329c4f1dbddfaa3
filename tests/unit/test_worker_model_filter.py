"""`--model NAME` (the [kafka] `models`): the worker counts only those models' predictions and generations."""

from __future__ import annotations

import json

import pytest

from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.kafka_worker import make_worker
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline


def test_predictions_and_generations_of_other_models_are_skipped_and_counted_outcomes_kept():
    pytest.importorskip("confluent_kafka")
    worker = make_worker(KafkaSettings(models=["credit"], outcomes_topic=None),  # applies without a broker
                         Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[])))
    events = [
        {"event_id": "p1", "model": "credit", "prediction": 1, "groups": {"sex": "F"}},
        {"event_id": "p2", "model": "other", "prediction": 1, "groups": {"sex": "F"}},
        {"event_id": "g1", "model": "other", "response": "hello there", "groups": {"sex": "F"}},
        {"event_id": "g2", "model": "credit", "response": "hello there", "groups": {"sex": "M"}},
        {"event_id": "p1", "label": 1},  # an outcome without a copy: for whichever model holds p1
    ]
    applied = worker.apply([json.dumps(e).encode() for e in events], lambda i: None)
    assert (applied, worker.filtered) == (3, 2)
    assert sorted(worker.pipeline.models) == ["credit"]  # "other" took no room under max_models
    assert worker.pipeline.models["credit"].journal.label[:1].tolist() == [1]
