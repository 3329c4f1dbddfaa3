"""Pipeline stages (monitor.stages): the pipeline runs the counterfactual scorer and the shadow itself, exactly as
the adapters used to wire them by hand; stages swap between batches; they are runtime, never state."""
from __future__ import annotations

import json
import pickle

import pytest
from helpers import run_cli

from fairwatch.consumers.state import StateStore
from fairwatch.monitor import pipeline as pipeline_module
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, to_json
from fairwatch.monitor.stages import Stage, derived_event, fresh_predictions
from test_scorer_step import _event, _gendered_events, _write_jsonl

CONFIG = dict(count_windows=[], time_windows_seconds=[])


class Contrarian(Stage):
    """Derives the opposite decision of each new prediction; counts its calls."""

    def __init__(self, suffix: str = ":contrarian") -> None:
        self.suffix = suffix
        self.derived = 0
        self.after = 0

    def derive(self, events, pipeline):  # noqa: ANN001, ANN201
        out = {i: [derived_event(events[i], events[i].model + self.suffix, 1 - events[i].prediction, None)]
               for i in fresh_predictions(events, pipeline)}
        self.derived += len(out)
        return out

    def after_batch(self, pipeline) -> None:  # noqa: ANN001
        self.after += 1


def _predictions(pipeline: Pipeline, model: str) -> int:
    return int(pipeline.models[model].journal.next_seq) if model in pipeline.models else 0


def _parsed(pipeline: Pipeline, lines: list[str]) -> list:
    return [pipeline.parser.parse(line) for line in lines]


def _report(pipeline: Pipeline) -> str:
    return to_json(build_report(pipeline, "toxic"))


def test_the_pipeline_runs_the_scorer_and_shadow_stages_exactly_as_the_hand_wiring_did(tiny_model_dirs) -> None:  # noqa: ANN001
    from fairwatch.monitor.scorer.scoring import CounterfactualScorer
    from fairwatch.monitor.scorer.shadow import ShadowStep
    from fairwatch.monitor.scorer.step import ScorerStep

    def stages() -> list:
        scorer = ScorerStep(CounterfactualScorer(tiny_model_dirs["keys"], device="cpu", workers=0, threshold=0.6),
                            postprocess_attribute="sex", refit_every=20, min_group_size=5)
        shadow = ShadowStep(CounterfactualScorer(tiny_model_dirs["ignores"], device="cpu", workers=0), "toxic",
                            threshold=0.6)
        return [scorer, shadow]

    lines = _gendered_events(3) + [_event(900, None, "male", 1, 0.9, 1), "not json"]
    halves = [lines[:30], lines[30:], lines[:30]]  # the third: a redelivery, dropped whole
    staged = Pipeline(MonitorConfig(**CONFIG), stages=stages())
    by_hand, (scorer, shadow) = Pipeline(MonitorConfig(**CONFIG)), stages()
    for half in halves:
        staged.process_lines(half)
        # What ShadowStep.process around its inner ScorerStep did before the stages (the adapters' wiring).
        events = _parsed(by_hand, half)
        derived = scorer.derive(events, by_hand)
        for position, extra in shadow.derive(events, by_hand).items():
            derived.setdefault(position, []).extend(extra)
        by_hand.process_events(events, derived=derived)
        scorer.refit(by_hand)

    assert list(staged.models) == list(by_hand.models) == [
        "toxic", "toxic:debiased", "toxic:baseline", "toxic:candidate", "toxic:postprocessed"]
    assert _report(staged) == _report(by_hand)
    cf, sh = staged.stages
    assert sh.report() == shadow.report() and sh.report()["scored"] == 48 and sh.report()["without_text"] == 1
    cf_report, hand_report = cf.report(), scorer.report()
    for report in (cf_report, hand_report):
        report.pop("scoring_seconds")
    assert cf_report == hand_report and cf_report["texts"] == 48  # the redelivery was not scored again
    assert cf.postprocessors["toxic"].to_dict() == scorer.postprocessors["toxic"].to_dict()
    for stage in (*staged.stages, scorer, shadow):
        stage.close()


def test_a_hot_swap_between_batches(tiny_model_dirs) -> None:  # noqa: ANN001
    from fairwatch.monitor.scorer.scoring import CounterfactualScorer
    from fairwatch.monitor.scorer.shadow import ShadowStep

    contrarian = Contrarian()
    pipeline = Pipeline(MonitorConfig(**CONFIG), stages=[contrarian])

    def batch(n: int) -> list:
        return [json.dumps(json.loads(line) | {"event_id": f"b{n}-{i}"}) for i, line in enumerate(_gendered_events(1))]

    pipeline.process_lines(batch(0))
    shadow = ShadowStep(CounterfactualScorer(tiny_model_dirs["ignores"], device="cpu", workers=0), "toxic",
                        threshold=0.6)
    pipeline.replace_stage(contrarian, shadow)  # from the next batch on, the candidate instead
    pipeline.process_lines(batch(1))
    assert pipeline.stages == (shadow,)
    assert _predictions(pipeline, "toxic:contrarian") == 16 and contrarian.after == 1
    assert _predictions(pipeline, "toxic:candidate") == _predictions(pipeline, "toxic:baseline") == 16
    pipeline.replace_stage(shadow, None)  # detached: production only
    shadow.close()
    pipeline.process_lines(batch(2))
    assert pipeline.stages == () and _predictions(pipeline, "toxic:candidate") == 16
    pipeline.add_stage(contrarian)
    pipeline.process_lines(batch(3))
    assert _predictions(pipeline, "toxic") == 64 and _predictions(pipeline, "toxic:contrarian") == 32
    with pytest.raises(ValueError, match="not a stage of this pipeline"):
        pipeline.replace_stage(shadow, contrarian)


def test_stages_are_runtime_never_state(tmp_path) -> None:  # noqa: ANN001
    contrarian = Contrarian()
    pipeline = Pipeline(MonitorConfig(**CONFIG), stages=[contrarian])
    pipeline.process_lines([_event(i, None, "male", 1, 0.9, None) for i in range(5)])
    assert "stages" not in pipeline.__getstate__()
    assert pickle.loads(pickle.dumps(pipeline)).stages == ()  # a plain unpickle has none: the caller hands them
    store = StateStore(tmp_path)
    store.save(pipeline, {})
    restored = Pipeline(MonitorConfig(**CONFIG), stages=[contrarian])
    store.restore(restored)  # what the worker does at start: the live pipeline keeps its stages
    store.close()
    assert restored.stages == (contrarian,) and _predictions(restored, "toxic:contrarian") == 5
    restored.process_lines([_event(5, None, "female", 0, 0.1, None)])
    assert _predictions(restored, "toxic:contrarian") == 6


def test_without_stages_a_batch_does_no_stage_work(monkeypatch) -> None:  # noqa: ANN001
    def fail(*args):  # noqa: ANN002, ANN202
        raise AssertionError("derive_all called without a stage")

    monkeypatch.setattr(pipeline_module, "derive_all", fail)
    pipeline = Pipeline(MonitorConfig(**CONFIG))
    result = pipeline.process_lines([_event(0, "she is kind", "female", 0, 0.1, None)])
    assert pipeline.stats.valid == 1 and not result.rejected


def test_malformed_events_are_refused_and_the_valid_ones_derived() -> None:
    contrarian = Contrarian()
    pipeline = Pipeline(MonitorConfig(**CONFIG), stages=[contrarian])
    lines = [_event(0, "she is kind", "female", 0, 0.1, None), "not json", '{"event_id": 3}',
             _event(1, None, "male", 1, 0.9, 1), _event(1, None, "male", 1, 0.9, 1)]
    result = pipeline.process_lines(lines)
    assert [(i, r.reason) for i, r in result.rejected] == [(1, "not_json"), (2, "wrong_type")]
    assert result.duplicates == 1 and contrarian.derived == 2 and contrarian.after == 1
    assert _predictions(pipeline, "toxic") == _predictions(pipeline, "toxic:contrarian") == 2
    assert pipeline.models["toxic:contrarian"].journal.label[:2].tolist() == [-1, 1]  # labels follow their source


def test_a_stage_given_by_the_caller_and_the_pipelines_own_are_merged_in_order() -> None:
    own, extra = Contrarian(":own"), Contrarian(":extra")
    pipeline = Pipeline(MonitorConfig(**CONFIG), stages=[own])
    extra.process(pipeline, [pipeline.parser.parse(_event(0, None, "male", 1, 0.9, None))])
    assert list(pipeline.models) == ["toxic", "toxic:extra", "toxic:own"]
    assert own.after == extra.after == 1
    with pytest.raises(ValueError, match="runs this stage already"):
        own.process(pipeline, [])


@pytest.mark.parametrize("stage, says", [
    (object(), "object is not a pipeline stage: it has no derive and no after_batch method"),
    (type("DeriveOnly", (), {"derive": lambda self, events, pipeline: {}})(), "has no after_batch method"),
])
def test_something_that_is_not_a_stage_is_refused_at_construction_in_one_line(stage, says) -> None:  # noqa: ANN001
    for attach in (lambda: Pipeline(stages=[stage]), lambda: Pipeline().add_stage(stage)):
        with pytest.raises(TypeError) as raised:
            attach()
        assert says in str(raised.value) and "\n" not in str(raised.value)
    pipeline = Pipeline(stages=[Contrarian()])
    with pytest.raises(TypeError):
        pipeline.replace_stage(pipeline.stages[0], stage)
    assert len(pipeline.stages) == 1


def test_replay_runs_the_scorer_and_the_shadow_as_stages(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    path = _write_jsonl(tmp_path, _gendered_events(2) + ["not json", _event(999, None, "male", 1, 0.9, None)])
    result = run_cli("replay", path, "--scorer-model", tiny_model_dirs["keys"], "--scorer-threshold", "0.6",
                     "--shadow-candidate", tiny_model_dirs["ignores"], "--shadow-model", "toxic",
                     "--shadow-threshold", "0.6", "--scorer-device", "cpu", "--report", "json", "--model", "toxic")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["models"]) == {"toxic", "toxic:debiased", "toxic:baseline", "toxic:candidate"}
    assert report["invalid"] == 1 and report["counterfactual"]["texts"] == 32 and report["shadow"]["scored"] == 32
    sex = {m: report["models"][m]["attributes"]["sex"]["gaps"]["demographic_parity_difference"]
           for m in ("toxic:baseline", "toxic:candidate", "toxic:debiased")}
    assert sex["toxic:candidate"] < 0.05 and sex["toxic:debiased"] < 0.05 < 0.9 < sex["toxic:baseline"]


def test_the_library_monitor_takes_stages() -> None:
    from fairwatch import Monitor

    monitor = Monitor(count_windows=[], time_windows_seconds=[], stages=[Contrarian()])
    assert monitor.update_many([_event(i, None, "male", i % 2, 0.5, None) for i in range(4)] + ["{"])[0][0] == 4
    assert monitor.report("toxic:contrarian")["events"] == monitor.report("toxic")["events"] == 4
