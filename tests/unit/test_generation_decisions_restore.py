"""A worker restored from a snapshot decides the generation fractions its own response classifier gives:
a toxic decision written by a worker with --response-model does not keep paging after a restart without it,
and a classifier added at a restart gets its toxic share decided."""
import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from generation_streams import generation_stream
from fairwatch.consumers.state import StateStore
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.exporter import FairwatchCollector
from fairwatch.monitor.generation import ResponseScorer
from fairwatch.monitor.pipeline import Pipeline

CONFIG = dict(count_windows=[400], time_windows_seconds=[30.0], min_group_size=30, privacy_floor=1,
              decision_check_events=400)

class Toxic:  # planted: every response to F is toxic
    def flags(self, responses):
        return [1.0 if "F!" in r else 0.0 for r in responses]

def pick(rng):
    sex = "F" if rng.random() < 0.5 else "M"
    return {"groups": {"sex": sex}, "response": f"Here is your plan {sex}!"}

def lines():
    ls = generation_stream(3000, pick, 1)
    return [ls[i:i + 250] for i in range(0, len(ls), 250)]

def toxic_lines(p):
    r = CollectorRegistry(); r.register(FairwatchCollector(p))
    return [l for l in generate_latest(r).decode().splitlines()
            if "fairwatch_decision_breach{" in l and "toxic" in l]

def test_worker_restarted_with_a_response_model_decides_the_toxic_share(tmp_path):
    batches = lines()
    first = Pipeline(MonitorConfig(**CONFIG))  # written without --response-model
    for b in batches[:2]:
        first.process_lines(b)
    store = StateStore(tmp_path); store.save(first, {})
    restored = Pipeline(MonitorConfig(**CONFIG)); restored.response_scorer = ResponseScorer(classifier=Toxic())
    store.restore(restored); store.close()
    for b in batches[2:]:
        restored.process_lines(b)
    assert toxic_lines(restored), "restarted with --response-model: the toxic share is never decided"

def test_worker_restarted_without_a_response_model_drops_its_toxic_decision(tmp_path):
    batches = lines()
    first = Pipeline(MonitorConfig(**CONFIG)); first.response_scorer = ResponseScorer(classifier=Toxic())
    for b in batches:
        first.process_lines(b)
    assert any(l.endswith(" 1.0") for l in toxic_lines(first))  # breached
    store = StateStore(tmp_path); store.save(first, {})
    restored = Pipeline(MonitorConfig(**CONFIG))  # restarted without --response-model
    store.restore(restored); store.close()
    for b in batches:
        restored.process_lines([l.replace('"event_id": "g', '"event_id": "h') for l in b])  # new events
    assert not toxic_lines(restored), toxic_lines(restored)
