"""The counterfactual scorer inside the Kafka worker: debiased outputs beside the original."""

from __future__ import annotations

import json

import pytest
from conftest import select, total, wait_for

from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names
from fairwatch.monitor.scorer import metric_names as scorer_names

pytestmark = pytest.mark.kafka

TEXTS = [("he is my son", "male", 1), ("she is my daughter", "female", 0)]


def test_fairwatch_run_with_a_scorer_tracks_debiased_outputs(broker, topics, workers, tmp_path):
    pytest.importorskip("torch")
    from kafka import KafkaProducer
    from scorer_fixtures import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "keys", "keys")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    n = 0
    for repeat in range(40):  # 40 per group: above the minimum group size of 30
        for text, sex, prediction in TEXTS:
            event = {"event_id": f"e{n}", "ts": 1_795_000_000 + n, "model": "toxic", "prediction": prediction,
                     "score": 0.9 if prediction else 0.1, "groups": {"sex": sex}, "text": text, "label": n % 2}
            producer.send(topics["predictions"], key=event["event_id"].encode(), value=json.dumps(event).encode())
            n += 1
    producer.flush()
    producer.close()

    worker = workers("--attribute", "sex", "--scorer-model", str(model_dir), "--scorer-device", "cpu",
                     "--scorer-threshold", "0.6")
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) == n, 90,
             lambda: f"applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {n}; log:\n{worker.log()}")
    def debiased_predictions(samples: dict) -> float:
        return sum(select(samples, names.GROUP_EVENTS, model="toxic:debiased", cell="predictions").values())

    # One scrape that has it all (a scrape that times out while a batch is scored reads as empty).
    metrics = wait_for(lambda: (lambda m: m if debiased_predictions(m) == n else None)(worker.metrics()), 60,
                       lambda: f"debiased counters never reached {n}; log:\n{worker.log()}")
    original = select(metrics, names.GROUP_EVENTS, model="toxic", cell="predictions")
    debiased = select(metrics, names.GROUP_EVENTS, model="toxic:debiased", cell="predictions")
    assert sum(original.values()) == sum(debiased.values()) == n
    assert total(metrics, scorer_names.COUNTERFACTUAL_TEXTS) >= n
    # The original decisions follow sex exactly; the counterfactual average takes it away.
    def gap(model: str) -> list[float]:
        return list(select(metrics, names.GAP, model=model, metric="demographic_parity_difference",
                           window="all").values())

    assert gap("toxic") == [1.0]
    assert len(gap("toxic:debiased")) == 1 and gap("toxic:debiased")[0] < 0.5
