"""Pipeline stages: steps the pipeline runs over every batch, such as the counterfactual scorer and a shadow model.

A stage reads a batch of parsed events before the pipeline applies it and
derives more predictions of those events under other model names (the
scorer's ``<model>:debiased``, a shadow candidate's ``<model>:candidate``);
the pipeline tracks them like any model, drops them with their source when it
is a duplicate and gives them its label, early or late. Once the batch is
applied, each stage may act on what the pipeline now holds (``after_batch``:
the scorer refits its per-group thresholds there). Adapters construct the
stages and hand them to :class:`~monitor.pipeline.Pipeline`; only the pipeline
runs them.

Stages are runtime, not state: ``Pipeline.__getstate__`` leaves them out, and
the pipeline a snapshot is restored into keeps its own.

>>> from fairwatch.monitor.config import MonitorConfig
>>> from fairwatch.monitor.pipeline import Pipeline
>>> class Contrarian(Stage):
...     '''A second opinion that decides the opposite of each new prediction.'''
...     def derive(self, events, pipeline):
...         return {i: [derived_event(events[i], events[i].model + ":contrarian", 1 - events[i].prediction, None)]
...                 for i in fresh_predictions(events, pipeline)}
>>> pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]), stages=[Contrarian()])
>>> _ = pipeline.process_lines([b'{"event_id": "1", "prediction": 1, "groups": {"sex": "F"}}',
...                             b'{"event_id": "1", "prediction": 1, "groups": {"sex": "F"}}',
...                             b'{"event_id": "1", "label": 1}'])
>>> sorted(pipeline.models), pipeline.stats.duplicates
(['default', 'default:contrarian'], 1)
>>> pipeline.monitor("default:contrarian").derived, "stages" in pipeline.__getstate__()
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fairwatch.monitor.events import Event, Rejection

if TYPE_CHECKING:
    from fairwatch.monitor.pipeline import BatchResult, Pipeline

__all__ = ["Stage", "check_stage", "derive_all", "derived_event", "fresh_predictions"]

Derived = dict[int, list[Event]]  # batch position of a prediction -> more predictions of that event


class Stage:
    """One step the pipeline runs over each batch. Subclasses define ``derive``; the rest is optional.

    ``derive`` runs outside the pipeline's lock (scoring is the slow part, and a
    /metrics scrape must not wait for it), before the batch is applied;
    ``after_batch`` runs after it, outside the lock too (take ``pipeline.lock``
    to read what it holds). An exception from either stops the batch like any
    failure to apply it.
    """

    def derive(self, events: list[Event | Rejection], pipeline: Pipeline) -> Derived:
        """Batch position of a prediction -> more predictions of the same event under other model names."""
        raise NotImplementedError

    def after_batch(self, pipeline: Pipeline) -> None:
        """Act on the applied batch (nothing by default)."""

    def close(self) -> None:
        """Release what the stage holds (worker processes, models); nothing by default."""

    def process(self, pipeline: Pipeline, events: list[Event | Rejection]) -> BatchResult:
        """Apply one batch to a pipeline that does not hold this stage, with this stage run for it (tests, scripts).

        A pipeline that holds the stage runs it by itself: call its ``process_events``.
        """
        if any(stage is self for stage in pipeline.stages):
            raise ValueError("the pipeline runs this stage already: call pipeline.process_events(events)")
        result = pipeline.process_events(events, derived=derive_all((self,), events, pipeline))
        self.after_batch(pipeline)
        return result


def check_stage(stage: Any) -> Any:
    """``stage``, if it has the methods the pipeline calls; a TypeError in one line if not (at construction,
    not at the first batch)."""
    missing = [name for name in ("derive", "after_batch") if not callable(getattr(stage, name, None))]
    if missing:
        raise TypeError(f"{type(stage).__name__} is not a pipeline stage: it has no {' and no '.join(missing)} "
                        "method (subclass fairwatch.monitor.stages.Stage)")
    return stage


def derive_all(stages: Iterable[Any], events: list[Event | Rejection], pipeline: Pipeline,
               derived: Derived | None = None) -> Derived:
    """Every stage's derived predictions of the batch, merged by position in stage order after ``derived``
    (which is not modified)."""
    merged: Derived = {position: list(extra) for position, extra in derived.items()} if derived else {}
    for stage in stages:
        for position, extra in stage.derive(events, pipeline).items():
            merged.setdefault(position, []).extend(extra)
    return merged


def derived_event(source: Event, model: str, prediction: int | None, score: float | None) -> Event:
    """Another model's prediction of ``source``'s event: same id, time and groups; the label follows later."""
    return Event(
        event_id=source.event_id, ts=source.ts, model=model, model_version=source.model_version,
        prediction=prediction, score=score, groups=source.groups,
    )


def fresh_predictions(events: list[Event | Rejection], pipeline: Any = None) -> list[int]:
    """Batch positions of the predictions ``pipeline`` will count: not held yet, first of their id in the batch.

    Deriving from the others would be wasted (the pipeline drops them as
    duplicates) and would count their texts twice in a stage's statistics.
    """
    held = pipeline.held_ids() if pipeline is not None else ()
    fresh: list[int] = []
    seen: set[str] = set()
    for i, event in enumerate(events):
        if event.__class__ is Rejection or event.prediction is None:
            continue
        if event.event_id in held or event.event_id in seen:
            continue
        seen.add(event.event_id)
        fresh.append(i)
    return fresh
