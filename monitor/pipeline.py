"""The pipeline: batches of events in, group metrics, drift and stats updated.

Adapters (files, Kafka) hand it raw lines or parsed events; it never reads
or writes anything itself. One ``Pipeline`` is used by one thread at a time;
the exporter reads it under ``lock``.

>>> pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
>>> result = pipeline.process_lines([
...     b'{"event_id": "1", "prediction": 1, "groups": {"sex": "F"}}',
...     b'{"event_id": "1", "prediction": 1, "groups": {"sex": "F"}}',
...     b'not json',
...     b'{"event_id": "1", "label": 0}'])
>>> pipeline.stats.valid, pipeline.stats.duplicates, pipeline.stats.invalid
(1, 1, 1)
>>> result.rejected[0][0], result.rejected[0][1].reason
(2, 'not_json')
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np

from fairwatch.monitor.breach import Onset
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.counts import NO_LABEL
from fairwatch.monitor.drift import DriftEvent
from fairwatch.monitor.events import Event, EventParser, Rejection, internal_error
from fairwatch.monitor.generation import NEGATIVE_SENTIMENT, GenerationMetrics, ResponseScorer
from fairwatch.monitor.generation.decisions import GenerationDecisions
from fairwatch.monitor.generation.inferred_groups import PromptGroups
from fairwatch.monitor.metric_names import GENERATION_DECISION_METRICS
from fairwatch.monitor.group_metrics import GroupMetrics
from fairwatch.monitor.label_index import LabelIndex, remember
from fairwatch.monitor.model_monitor import ModelMonitor, decision_settings
from fairwatch.monitor.stages import Stage, check_stage, derive_all

# Upper bounds (seconds) of the batch-duration histogram.
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
REJECTION_SAMPLES = 20
_CAPACITY_EFFECT = {
    "model": "predictions of further models are refused (reason over_capacity); see fairwatch_over_capacity_total",
    "attribute": "further attribute names are not tracked; list the ones to track in `attributes`",
    "group_value": "further group values of that attribute are counted as 'other'",
}
log = logging.getLogger("fairwatch.pipeline")


@dataclass
class PipelineStats:
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_reasons: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # metric_names.OUTCOME_STATUSES
    rejection_samples: list = field(default_factory=list)  # (input position, Rejection)
    last_event_ts: dict = field(default_factory=dict)  # model -> newest event time
    batch_seconds_buckets: list = field(default_factory=lambda: [0] * len(BATCH_SECONDS_BUCKETS))
    batch_seconds_sum: float = 0.0


@dataclass
class BatchResult:
    rejected: list[tuple[int, Rejection]]  # (position in the batch, why)
    duplicates: int
    drift: list[DriftEvent]
    onsets: list[Onset]


class _ModelBatch:
    """One model's new predictions in a batch, and their input positions."""

    __slots__ = ("monitor", "events", "positions")

    def __init__(self, monitor: ModelMonitor) -> None:
        self.monitor = monitor
        self.events: list[Event] = []
        self.positions: list[int] = []

    def columns(self, start: int, stop: int):
        """(event_ids, predictions, labels, scores, timestamps, groups, positions) of a slice."""
        events = self.events[start:stop]
        n = len(events)
        return (
            [e.event_id for e in events],
            np.fromiter([e.prediction for e in events], np.int64, n),  # every one a prediction
            np.array([NO_LABEL if e.label is None else e.label for e in events], dtype=np.int64),
            _floats([e.score for e in events], n),  # None -> NaN
            _floats([e.ts for e in events], n),
            [e.groups for e in events],
            np.fromiter(self.positions[start:stop], np.int64, n),
        )


_RESPONSE = attrgetter("response")


def _floats(values: list, n: int) -> np.ndarray:
    """A float64 array of ``values``, None as NaN. ``np.fromiter`` is the fast path (floats only)."""
    try:
        return np.fromiter(values, np.float64, n)
    except TypeError:  # a None among them
        return np.array(values, dtype=np.float64)


class Pipeline:
    """Parses and deduplicates events, joins outcomes (:class:`LabelIndex`) and fans each model's predictions
    and labels out to its :class:`ModelMonitor`; counts its own health (``stats``).

    Readers use the public reading methods (``monitor_names``, ``monitor``, ``pending_outcomes``, ...) under
    ``lock``. ``stages`` (:mod:`monitor.stages`: the counterfactual scorer, a shadow model) run over every
    batch, in order. Its state pickles through ``__getstate__``: the parser, the response scorer, the stages,
    the lock and the clock are left out and rebuilt (restoring into a live pipeline keeps its clock and
    stages)."""

    _REBUILT = ("parser", "lock", "response_scorer", "prompt_groups", "clock", "stages")

    def __init__(self, config: MonitorConfig | None = None, *, clock=time.time,
                 stages: Iterable[Stage] = ()) -> None:
        self.config = config = config or MonitorConfig()
        self.monitors: dict[str, ModelMonitor] = {}
        self.labels = LabelIndex(config.early_outcome_capacity)
        self.generations: dict[str, GenerationMetrics] = {}  # per model with generation events (LLM responses)
        # (model, event_id) of recent generations, oldest first and bounded like the journal: the dedup store
        # of generations without a prediction, which the prediction index does not hold.
        self.generation_ids: dict[tuple[str, str], int] = {}
        # Anytime-valid decisions on the generation fractions, per model (created with its first generation).
        self.generation_decisions: dict[str, GenerationDecisions] = {}
        self.onsets: list[Onset] = []
        self.drift_events: list[DriftEvent] = []
        # The exporter's group -> label value per (model, attribute), in the order groups reached the privacy floor
        # (past max_groups_per_attribute: "other"). Kept here, so that snapshots keep them: a restart relabelling
        # groups by their counts then would move series between a group and "other".
        self.export_labels: dict[tuple[str, str], dict[str, str]] = {}
        self.stats = PipelineStats()
        self.position = 0  # events seen so far, valid or not
        self._capacity_warned: set[str] = set()
        self._build_runtime(clock)
        self.stages = tuple(check_stage(stage) for stage in stages)

    def _build_runtime(self, clock) -> None:
        """What the state leaves out: the parser, the response scorer, the lock, the clock (and no stages)."""
        config = self.config
        # Replaced whole, never changed in place: a batch runs the stages it read at its start.
        self.stages: tuple[Stage, ...] = ()
        self.clock = clock  # seconds: the decisions' time-based checks read it
        self.parser = EventParser(
            default_model=config.default_model,
            threshold=config.threshold,
            max_event_bytes=config.max_event_bytes,
            max_text_chars=config.max_text_chars,
            max_future_seconds=config.max_future_seconds,
            now=clock,
        )
        self.response_scorer = ResponseScorer()  # reloads its phrases and lexicon
        self.prompt_groups = PromptGroups()  # groups of untagged generations, from their prompt
        self.lock = threading.Lock()

    # -- state ------------------------------------------------------------------
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._REBUILT}

    def __setstate__(self, state: dict) -> None:
        """Take ``state``. Restoring into a live pipeline (``pipeline.__setstate__(state)``, what the worker's
        snapshot store does) replaces its counts and keeps its parser, response scorer, stages, lock and clock;
        unpickling a new one rebuilds them from the config ``state`` names (and has no stages)."""
        runtime = {k: self.__dict__[k] for k in self._REBUILT if k in self.__dict__}
        live = state.get("config") is self.__dict__.get("config") and len(runtime) == len(self._REBUILT)
        self.__dict__.update(state)
        self.__dict__.setdefault("export_labels", {})  # snapshots from before 2026-11-30 have none
        if live:
            self.__dict__.update(runtime)
        else:
            self._build_runtime(runtime.get("clock", time.time))

    # -- entry points ---------------------------------------------------------
    def process_lines(self, lines: list[bytes | str]) -> BatchResult:
        parse = self.parser.parse
        return self.process_events([parse(line) for line in lines])

    def process_events(
        self, events: list[Event | Rejection], derived: dict[int, list[Event]] | None = None
    ) -> BatchResult:
        """Apply a batch, running the stages over it. ``derived`` maps the batch
        position of a prediction to more predictions of the same event under
        other model names (outputs such as ``credit-risk:debiased``; the
        stages' come after these): they are tracked like any model, follow the
        fate of their source (dropped with it when it is a duplicate) and take
        its label, early or late."""
        stages = self.stages
        if stages:  # outside the lock, like the response scoring below
            derived = derive_all(stages, events, self, derived)
        started = time.perf_counter()
        # Outside the lock: scoring responses (VADER) is the slow part, and a scrape must not wait for it.
        responses = self._score_responses(events)
        with self.lock:
            result = self._apply(events, derived or {}, responses)
        self._observe_batch(time.perf_counter() - started)
        for stage in stages:
            stage.after_batch(self)
        return result

    # -- stages (runtime; a change takes effect at the next batch, from any one thread) ------
    def add_stage(self, stage: Stage) -> None:
        """Run ``stage`` after the others from the next batch on."""
        self.stages = (*self.stages, check_stage(stage))

    def replace_stage(self, old: Stage, new: Stage | None) -> None:
        """Run ``new`` in ``old``'s place from the next batch on (None: remove it); ValueError if ``old`` is not
        a stage of this pipeline. A batch already running on another thread may still be using ``old``: close
        it only once the next batch has started (or from the batch thread itself, as the hot attach does)."""
        if not any(stage is old for stage in self.stages):
            raise ValueError("not a stage of this pipeline")
        if new is not None:
            check_stage(new)
        self.stages = tuple(new if stage is old else stage for stage in self.stages
                            if stage is not old or new is not None)

    # -- reading (under ``lock`` while the pipeline runs) ------------------------
    @property
    def models(self) -> dict[str, GroupMetrics]:
        """Model name -> its group metrics (a new dict; the metrics are live)."""
        return {name: monitor.metrics for name, monitor in self.monitors.items()}

    def monitor(self, model: str) -> ModelMonitor:
        """The monitor of ``model`` (KeyError if it has none)."""
        return self.monitors[model]

    def primary_models(self) -> list[str]:
        """Models with predictions of their own (derived outputs left out)."""
        return [name for name, monitor in self.monitors.items() if not monitor.derived]

    def held_ids(self):
        """Event ids of held predictions (a live view for ``in``)."""
        return self.labels.held_ids()

    def pending_outcomes(self) -> int:
        """Outcomes waiting for their prediction."""
        return self.labels.pending_outcomes()

    def generation_snapshots(self) -> dict[str, tuple[dict, dict[str, list[str]]]]:
        """Per model with generations: (its generation statistics per window, group names per attribute)."""
        out = {}
        for name, generations in self.generations.items():
            monitor = self.monitors[name]
            out[name] = (generations.snapshot(monitor.group_counts()), monitor.group_names())
        return out

    def _score_responses(self, events: list[Event | Rejection]) -> dict[int, tuple[bool, float, float]]:
        """Batch position -> (refused, compound sentiment, toxic: 1.0 / 0.0, NaN without a response classifier)
        of every generation in the batch. A response whose scoring raises costs its own event (replaced by an
        internal_error rejection), not the batch."""
        try:  # in C: most batches hold no generation, and this scan is all they pay for them
            responses = list(map(_RESPONSE, events))
        except AttributeError:  # a rejection in the batch
            responses = [None if e.__class__ is Rejection else e.response for e in events]
        if responses.count(None) == len(responses):
            return {}
        positions = [i for i, response in enumerate(responses) if response is not None]
        positions = self._infer_prompt_groups(events, positions)
        score_batch = self.response_scorer.score_batch

        def rows(responses: list[str]) -> list[tuple[bool, float, float]]:
            refused, sentiment, toxic = score_batch(responses)
            toxic = np.full(len(responses), np.nan) if toxic is None else toxic
            return list(zip(refused.tolist(), sentiment.tolist(), toxic.tolist()))

        try:
            return dict(zip(positions, rows([events[i].response for i in positions])))
        except Exception:  # noqa: BLE001 - find the one response that raised
            scores = {}
            for i in positions:
                try:
                    scores[i] = rows([events[i].response])[0]
                except Exception as exc:  # noqa: BLE001
                    events[i] = internal_error(exc)
            return scores

    def _infer_prompt_groups(self, events: list[Event | Rejection], positions: list[int]) -> list[int]:
        """Generations without ``groups`` take those their prompt names (attributes ``inferred_<attribute>``,
        monitor.generation.inferred_groups); one whose prompt names none is refused. Returns the positions
        of the generations left."""
        if all(events[i].groups is not None for i in positions):
            return positions
        kept = []
        for i in positions:
            event = events[i]
            if event.groups is None:
                groups = self.prompt_groups(event.prompt)
                if not groups:
                    events[i] = Rejection("missing_field", "Object missing required field `groups`, and the "
                                                           "`prompt` names no group the lexicons know")
                    continue
                tracked = self.config.attributes
                if tracked is not None and not any(a in tracked for a in groups):
                    # Filed under the tracked attributes' "unknown" instead, it would mix with tagged traffic.
                    events[i] = Rejection("missing_field", "Object missing required field `groups`; its `prompt` "
                                          f"names {', '.join(f'{a}={v}' for a, v in sorted(groups.items()))}, "
                                          "and none of those attributes is in `attributes` (add it to track "
                                          "inferred groups)")
                    continue
                event.groups = groups
            kept.append(i)
        return kept

    def _generations_for(self, model: str) -> GenerationMetrics:
        generations = self.generations.get(model)
        if generations is None:
            c = self.config
            generations = self.generations[model] = GenerationMetrics(
                c.count_windows, c.time_windows_seconds, capacity=c.journal_capacity)
        return generations

    def _add_generations(self, model: str, events: list[Event], scores: list[tuple[bool, float, float]],
                         position: int) -> list[Onset]:
        """Count a model's new generations per group; the group codes are its prediction metrics' (same names,
        same ``other``, same discovered attributes). ``position``: the stream position of the last one.
        Returns the generation breaches declared now."""
        metrics = self._monitor_for(model).metrics
        codes = metrics.group_codes([e.groups for e in events])
        refused = np.array([r for r, _, _ in scores], dtype=bool)
        sentiment = np.array([s for _, s, _ in scores], dtype=np.float64)
        toxic = np.array([t for _, _, t in scores], dtype=np.float64)
        ts = np.array([e.ts for e in events], dtype=np.float64)
        reported = {a: codes[a] for a in metrics.reported}
        self._generations_for(model).add(reported, refused, sentiment, ts, toxic)
        newest = float(ts.max())
        self.stats.last_event_ts[model] = max(self.stats.last_event_ts.get(model, newest), newest)
        flags = {"refusal_rate_difference": refused, "negative_share_difference": sentiment <= NEGATIVE_SENTIMENT}
        if self.response_scorer.classifier is not None:
            flags["toxic_share_difference"] = toxic == 1.0
        names = {a: metrics.index[a].values for a in reported}
        return self._generation_decisions_for(model).observe(reported, flags, names, position, now=self.clock())

    def _generation_decisions_for(self, model: str) -> GenerationDecisions:
        # The toxic share takes part (and a share of the family error) only with a response classifier.
        metrics = tuple(GENERATION_DECISION_METRICS if self.response_scorer.classifier is not None else (
            GENERATION_DECISION_METRICS[:2]))
        decisions = self.generation_decisions.get(model)
        if decisions is not None and tuple(decisions.metrics) != metrics:
            # Restored from a snapshot written with (or without) --response-model: a toxic decision that nothing
            # feeds any more must not keep paging, and a new classifier's share must be decided. Anytime-valid
            # decisions may restart at any time.
            log.warning("model %s: generation decisions restart: the response classifier %s since the snapshot",
                        model, "was added" if "toxic_share_difference" in metrics else "was removed")
            decisions = None
        if decisions is None:
            decisions = self.generation_decisions[model] = GenerationDecisions(
                model, metrics=metrics, **decision_settings(self.config, model))
        return decisions

    # -- internals --------------------------------------------------------------
    def _monitor_for(self, model: str) -> ModelMonitor:
        monitor = self.monitors.get(model)
        if monitor is None:
            monitor = self.monitors[model] = ModelMonitor(model, self.config)
        return monitor

    def apply_capacity_settings(self) -> None:
        """Bring restored models to this config's caps (a snapshot holds the caps it was written with)."""
        for monitor in self.monitors.values():
            monitor.apply_capacity_settings(self.config)
        self.labels.early_capacity = self.config.early_outcome_capacity

    def restart_decisions(self) -> None:
        """Start every model's breach decisions and drift detectors afresh (after their settings changed); counts stay.
        The decisions are anytime-valid from any start, so a fresh start keeps their error guarantee."""
        for monitor in self.monitors.values():
            monitor.restart_decisions(self.config)
        self.generation_decisions = {}  # created afresh with each model's next generation

    def _apply(self, events: list[Event | Rejection], derived: dict[int, list[Event]],
               responses: dict[int, tuple[bool, float, float]]) -> BatchResult:
        stats = self.stats
        labels = self.labels
        index = labels.index
        index_get = index.get
        early = labels.early
        batches: dict[str, _ModelBatch] = {}
        rejected: list[tuple[int, Rejection]] = []
        outcomes: list[tuple[str, int]] = []
        duplicates = 0
        accepted_derived: list[tuple[int, Event, list[Event]]] = []
        generations: dict[str, tuple[list[Event], list[tuple[bool, float, float]], list[int]]] = {}
        model = None
        for i, event in enumerate(events):
            if event.__class__ is Rejection:
                rejected.append((i, event))
                continue
            event_id = event.event_id
            if event.response is not None:
                if (event.model, event_id) in self.generation_ids:
                    duplicates += 1
                    continue
                if event.prediction is not None:  # its prediction a duplicate: the whole event is, response too
                    held = index_get(event_id)
                    if held is not None and (held[0].model == event.model
                                             or labels.holds_further(event_id, event.model)):
                        duplicates += 1
                        continue
                if self._no_room_for(event.model):
                    rejected.append((i, self._over_model_capacity(event.model)))
                    continue
                remember(self.generation_ids, (event.model, event_id), 1, self.config.journal_capacity)
                batch_events, batch_scores, batch_positions = generations.setdefault(event.model, ([], [], []))
                batch_events.append(event)
                batch_scores.append(responses[i])
                batch_positions.append(i)
                if event.prediction is None:
                    self._monitor_for(event.model)  # the model counts against max_models from its first event
                    continue
            if event.prediction is None:
                copy = event.prediction_copy
                if copy is not None and self._no_room_for(copy.model):
                    rejected.append((i, self._over_model_capacity(copy.model)))
                    continue
                outcomes.append((event_id, event.label, event.ts, event.prediction_copy))
                continue
            held = index_get(event_id)
            if held is not None and (held[0].model == event.model or labels.holds_further(event_id, event.model)):
                duplicates += 1
                continue
            if event.model != model:
                model = event.model
                batch = batches.get(model)
                if batch is None:
                    if self._no_room_for(model):
                        rejected.append((i, self._over_model_capacity(model)))
                        model = None  # the next event looks its model up again
                        continue
                    batch = batches[model] = _ModelBatch(self._monitor_for(model))
                # Bound per model: this loop is the per-event cost of the core.
                monitor, model_events = batch.monitor, batch.events
                first_seq = monitor.metrics.journal.next_seq
                add_event, add_position = model_events.append, batch.positions.append
            if held is None:
                index[event_id] = (monitor, first_seq + len(model_events))
            else:  # the same event scored by another model too (e.g. a shadow model): not a duplicate
                labels.add_further(event_id, (monitor, first_seq + len(model_events)))
            if early and event.label is None and event_id in early:
                event.label = early.pop(event_id)
                stats.outcomes["joined"] += 1
            add_event(event)
            add_position(i)
            if derived and i in derived:
                accepted_derived.append((i, event, derived[i]))
        if accepted_derived:
            self._add_derived(accepted_derived, batches)

        drift: list[DriftEvent] = []
        onsets: list[Onset] = []
        for model, batch in batches.items():
            monitor = batch.monitor
            size = monitor.metrics.journal.capacity
            for start in range(0, len(batch.events), size):
                ids, prediction, label, score, ts, groups, positions = batch.columns(start, start + size)
                new_drift, new_onsets, dropped = monitor.observe_predictions(
                    ids, prediction, label, score, ts, groups, self.position + positions, now=self.clock())
                labels.forget(dropped, monitor)
                drift += new_drift
                onsets += new_onsets
                newest = float(ts.max())
                stats.last_event_ts[model] = max(stats.last_event_ts.get(model, newest), newest)
        for model, (batch_events, scores, gen_positions) in generations.items():
            onsets += self._add_generations(model, batch_events, scores, self.position + gen_positions[-1])
        if outcomes:
            labels.apply_outcomes(outcomes, stats.outcomes, self._monitor_for)

        stats.valid += len(events) - len(rejected) - duplicates - len(outcomes)
        stats.duplicates += duplicates
        stats.invalid += len(rejected)
        for i, rejection in rejected:
            stats.invalid_reasons[rejection.reason] += 1
            if len(stats.rejection_samples) < REJECTION_SAMPLES:
                stats.rejection_samples.append((self.position + i, rejection))
        self.position += len(events)
        self._warn_over_capacity()
        drift.sort(key=lambda d: d.event_index)
        self.drift_events += drift
        self.onsets += onsets
        return BatchResult(rejected, duplicates, drift, onsets)

    def over_capacity(self) -> dict[str, int]:
        """What the caps turned away: refused predictions of models past max_models, attribute
        names not tracked past max_attributes, group values counted as ``other`` past max_group_values."""
        return {
            "model": self.stats.invalid_reasons.get("over_capacity", 0),
            "attribute": sum(m.metrics.untracked_attributes for m in self.monitors.values()),
            "group_value": sum(m.metrics.folded_group_values for m in self.monitors.values()),
        }

    def _warn_over_capacity(self) -> None:
        """One warning line per cap, the first time it turns something away."""
        if len(self._capacity_warned) == 3:
            return
        settings = {"model": "max_models", "attribute": "max_attributes", "group_value": "max_group_values"}
        for kind, count in self.over_capacity().items():
            if count and kind not in self._capacity_warned:
                self._capacity_warned.add(kind)
                log.warning("%s cap reached (%s = %d): %s", kind.replace("_", " "), settings[kind],
                            getattr(self.config, settings[kind]), _CAPACITY_EFFECT[kind])

    def _no_room_for(self, model: str) -> bool:
        """A model not tracked yet, with max_models already tracked."""
        return model not in self.monitors and len(self.monitors) >= self.config.max_models

    def _over_model_capacity(self, model: str) -> Rejection:
        return Rejection("over_capacity", f"model {model[:80]!r} would be model number {len(self.monitors) + 1}, "
                                          f"past max_models = {self.config.max_models}")

    def _add_derived(self, accepted: list[tuple[int, Event, list[Event]]], batches: dict[str, _ModelBatch]) -> None:
        labels = self.labels
        for position, source, extras in accepted:
            for event in extras:
                batch = batches.get(event.model)
                if batch is None:
                    monitor = self._monitor_for(event.model)
                    monitor.derived = True
                    batch = batches[event.model] = _ModelBatch(monitor)
                event.label = source.label
                labels.add_derived(source.event_id, (batch.monitor, batch.monitor.metrics.journal.next_seq
                                                     + len(batch.events)))
                batch.events.append(event)
                batch.positions.append(position)

    def _observe_batch(self, seconds: float) -> None:
        stats = self.stats
        stats.batch_seconds_sum += seconds
        for i, bound in enumerate(BATCH_SECONDS_BUCKETS):
            if seconds <= bound:
                stats.batch_seconds_buckets[i] += 1
                break
