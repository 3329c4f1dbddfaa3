"""Typed decision keys (monitor.decision_key): every decision's state is keyed by a ``DecisionKey``, never by a
string parsed back; a snapshot written with the previous string keys restores with the same decisions."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fairwatch.consumers.state import FORMAT_VERSION, SNAPSHOT_NAME, StateStore
from fairwatch.decide import MergedDecisionCollector
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.breach import BreachMonitor, MergedDecisions, Totals
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.decision_key import DecisionKey
from fairwatch.monitor.exporter import FairwatchCollector
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, to_json
from fairwatch.monitor.synthetic import SyntheticStream

CONFIG = dict(attributes=["race", "sex"], count_windows=[400], time_windows_seconds=[30.0], min_group_size=20,
              privacy_floor=1, journal_capacity=1500, early_outcome_capacity=50, decision_block_events=100,
              decision_check_events=200, drift_block_events=100)
REFUSAL = "I'm sorry, but I cannot assist with that request."
ANSWER = "Great choice! Here is a lovely plan."


def clock() -> float:
    return 1_795_000_100.0


def batches() -> list[list[bytes]]:
    """Predictions with a shift (gap and subgroup-cell breaches) and a chat model's generations with a planted
    refusal gap (a generation breach), in 12 batches."""
    stream = SyntheticStream(n_events=3000, label_delay_events=300, label_fraction=0.6, shift_at=1000,
                             shift_logit=3.0, seed=3)
    rng = np.random.default_rng(5)
    out = []
    for b, batch in enumerate(stream.batches(250)):
        generations = []
        for k in range(150):
            sex = "F" if rng.random() < 0.5 else "M"
            refused = rng.random() < (0.4 if sex == "F" else 0.05)
            generations.append(json.dumps({
                "event_id": f"g{b}-{k}", "ts": 1_795_000_000 + b, "model": "chat", "groups": {"sex": sex},
                "prompt": "Plan a weekend", "response": REFUSAL if refused else ANSWER}).encode())
        out.append(batch + generations)
    return out


def run(pipeline: Pipeline, lines: list[list[bytes]]) -> Pipeline:
    for batch in lines:
        pipeline.process_lines(batch)
    return pipeline


def exposition(pipeline: Pipeline) -> list[str]:
    registry = CollectorRegistry()
    registry.register(FairwatchCollector(pipeline))
    return [line for line in generate_latest(registry).decode().splitlines() if "batch_processing_seconds" not in line]


def breach_monitors(pipeline: Pipeline) -> tuple[list[BreachMonitor], list[BreachMonitor]]:
    """(the prediction decisions of every model, the generation decisions' monitors)."""
    return ([m.decisions for m in pipeline.monitors.values()],
            [g.monitor for g in pipeline.generation_decisions.values()])


def as_previous_version(pipeline: Pipeline) -> None:
    """Key the decisions as fairwatch did before typed keys (snapshot format 2): ``(attribute, metric)`` and
    ``(attribute, "<metric>:<cell>")`` tuples, and generation carrier attributes named ``"<metric>@<attribute>"``."""

    def old_key(key: DecisionKey, attribute) -> tuple:
        return (attribute, key.metric if key.cell is None else f"{key.metric}:{key.cell}")

    predictions, generations = breach_monitors(pipeline)
    for monitor in predictions:
        monitor.states = {old_key(k, k.attribute): v for k, v in monitor.states.items()}
        monitor.active = {old_key(k, k.attribute): v for k, v in monitor.active.items()}
    for monitor in generations:
        def carrier(key: DecisionKey) -> str:
            return f"{key.metric}@{key.attribute}"
        states, active = monitor.states, monitor.active
        monitor.rename_attributes(carrier)
        monitor.states = {old_key(k, carrier(k.attribute)): v for k, v in states.items()}
        monitor.active = {old_key(k, carrier(k.attribute)): v for k, v in active.items()}


def test_a_key_is_the_plain_tuple_of_its_parts_and_survives_pickle_and_copy():
    gap = DecisionKey("sex", "demographic_parity_difference")
    cell = DecisionKey("race&sex", "subgroup_tpr_difference", cell="Black&Female")
    assert gap == ("sex", "demographic_parity_difference") and hash(gap) == hash(tuple(gap))
    assert cell == ("race&sex", "subgroup_tpr_difference", "Black&Female") and cell.cell == "Black&Female"
    assert DecisionKey("race&sex", "subgroup_tpr_difference") != cell  # a cell is not its attribute's gap
    carrier = DecisionKey(DecisionKey("sex", "refusal_rate_difference"), "demographic_parity_difference")
    for key in (gap, cell, carrier):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            again = pickle.loads(pickle.dumps(key, protocol=protocol))
            assert again == key and type(again) is DecisionKey and again.cell == key.cell
        assert copy.deepcopy(key) == key and type(copy.deepcopy(key)) is DecisionKey
    assert type(carrier.attribute) is DecisionKey
    with pytest.raises(AttributeError):
        gap.metric = "other"  # immutable


def test_every_decision_is_keyed_by_a_typed_key_and_no_key_holds_text_to_parse():
    pipeline = run(Pipeline(MonitorConfig(**CONFIG), clock=clock), batches())
    predictions, generations = breach_monitors(pipeline)
    keys = [k for m in predictions + generations for k in (*m.states, *m.active)]
    assert any(k.cell for k in keys), "no subgroup cell was decided"
    assert any(isinstance(k.attribute, DecisionKey) for k in keys), "no generation decision"
    assert all(type(k) is DecisionKey and ":" not in k.metric and "@" not in k.metric for k in keys)
    assert all(type(a) is DecisionKey for m in generations for a in m.counts)
    # Every kind of decision was declared: gaps, cells, a generation fraction.
    declared = {(o.attribute, o.metric) for o in pipeline.onsets}
    assert ("sex", "refusal_rate_difference") in declared
    assert {"demographic_parity_difference", "subgroup_selection_rate_difference"} <= {m for _, m in declared}


def test_a_snapshot_written_with_the_previous_string_keys_restores_with_the_same_decisions(tmp_path):
    assert FORMAT_VERSION == 2  # the format is unchanged: this version reads what the previous one wrote
    lines = batches()
    half = len(lines) // 2
    whole = run(Pipeline(MonitorConfig(**CONFIG), clock=clock), lines)

    upgraded_cells = []  # per restore: whether an active subgroup-cell breach came through

    def restored_and_run(prepare) -> Pipeline:
        first = run(Pipeline(MonitorConfig(**CONFIG), clock=clock), lines[:half])
        as_previous_version(first)
        prepare(first)
        directory = tmp_path / f"state{len(list(tmp_path.iterdir()))}"
        store = StateStore(directory)
        store.save(first, {"offsets": {"p0": half}})
        snapshot = (directory / SNAPSHOT_NAME).read_bytes()
        assert b"DecisionKey" not in snapshot and b"@sex" in snapshot and b"_difference:" in snapshot
        restored = Pipeline(MonitorConfig(**CONFIG), clock=clock)
        assert store.restore(restored) == {"offsets": {"p0": half}}
        store.close()
        predictions, generations = breach_monitors(restored)
        assert all(type(k) is DecisionKey for m in predictions + generations for k in (*m.states, *m.active))
        upgraded_cells.append(any(k.cell and on for m in predictions for k, on in m.active.items()))
        return run(restored, lines[half:])

    upgraded = restored_and_run(lambda pipeline: None)
    assert upgraded_cells == [True]
    assert to_json(build_report(upgraded)) == to_json(build_report(whole))
    assert exposition(upgraded) == exposition(whole)

    # The comparison sees the decisions: a snapshot whose active breaches were lost reports differently.
    def forget_breaches(pipeline: Pipeline) -> None:
        for monitor in breach_monitors(pipeline)[0]:
            monitor.active = {}

    forgetful = restored_and_run(forget_breaches)
    assert to_json(build_report(forgetful)) != to_json(build_report(whole))


def test_merged_decisions_export_one_series_per_attribute_and_metric_with_searched_cells():
    thresholds = lambda attribute, metric: 0.8 if metric.endswith("ratio") else 0.1  # noqa: E731
    merged = MergedDecisions("m", thresholds=thresholds, attribute_budget=1, check_events=1, min_group_size=20,
                             subgroup_attributes=["a&b"])
    cells = {"x&y": (400, 300, 0, 0, 0, 0), "x&z": (400, 100, 0, 0, 0, 0), "w&y": (400, 110, 0, 0, 0, 0),
             "w&z": (400, 90, 0, 0, 0, 0)}
    merged.update([Totals(1600, {"a&b": cells})], position=1599)
    cell_keys = [k for k in merged.states if k.cell is not None]
    assert len({k.metric for k in cell_keys}) < len(cell_keys)  # several cells of one metric
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedDecisionCollector({"m": merged}))
    samples = [(s.name, tuple(sorted(s.labels.items())), s.value)
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples if s.name == names.DECISION_BREACH]
    assert len({labels for _, labels, _ in samples}) == len(samples)  # no label set twice
    breached = {dict(labels)[names.METRIC] for _, labels, value in samples if value == 1.0}
    assert breached == {"subgroup_selection_rate_difference"}  # x&y: 75% selected against about 25%
