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
from dataclasses import dataclass, field

import numpy as np

from fairwatch.monitor.breach import BreachMonitor, Onset
from fairwatch.monitor.calibration import ScoreCalibration
from fairwatch.monitor.config import ModelThresholds, MonitorConfig
from fairwatch.monitor.counts import NO_LABEL
from fairwatch.monitor.drift import DriftEvent, DriftMonitor
from fairwatch.monitor.events import Event, EventParser, PredictionCopy, Rejection, internal_error
from fairwatch.monitor.generation import NEGATIVE_SENTIMENT, GenerationMetrics, ResponseScorer
from fairwatch.monitor.generation.decisions import GenerationDecisions
from fairwatch.monitor.generation.inferred_groups import PromptGroups
from fairwatch.monitor.metric_names import GENERATION_DECISION_METRICS
from fairwatch.monitor.group_metrics import GroupMetrics
from fairwatch.monitor.score_auc import ScoreHistograms

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

    __slots__ = ("metrics", "events", "positions")

    def __init__(self, metrics: GroupMetrics) -> None:
        self.metrics = metrics
        self.events: list[Event] = []
        self.positions: list[int] = []

    def columns(self, start: int, stop: int):
        """(event_ids, predictions, labels, scores, timestamps, groups, positions) of a slice."""
        events = self.events[start:stop]
        labels = np.array([e.label for e in events], dtype=np.float64)  # None -> NaN
        return (
            [e.event_id for e in events],
            np.array([e.prediction for e in events], dtype=np.int64),
            np.where(np.isnan(labels), NO_LABEL, labels).astype(np.int64),
            np.array([e.score for e in events], dtype=np.float64),  # None -> NaN
            np.array([e.ts for e in events], dtype=np.float64),
            [e.groups for e in events],
            np.array(self.positions[start:stop], dtype=np.int64),
        )


def _repeat(first: int, label: int) -> str:
    """Outcome status of a second label for one event: the same label again, or another."""
    return "duplicate" if first == label else "conflicting"


def _remember(store: dict, key: str, value: int, capacity: int) -> bool:
    """Insert into an oldest-first dict bounded to ``capacity``; True if the oldest entry had to go."""
    store[key] = value
    if len(store) > capacity:
        del store[next(iter(store))]
        return True
    return False


class Pipeline:
    def __init__(self, config: MonitorConfig | None = None, *, clock=time.time) -> None:
        self.config = config = config or MonitorConfig()
        self.parser = EventParser(
            default_model=config.default_model,
            threshold=config.threshold,
            max_event_bytes=config.max_event_bytes,
            max_text_chars=config.max_text_chars,
            max_future_seconds=config.max_future_seconds,
            now=clock,
        )
        self.clock = clock  # seconds: the decisions' time-based checks read it
        self.models: dict[str, GroupMetrics] = {}
        self.drift_monitors: dict[str, DriftMonitor] = {}
        self.breach_monitors: dict[str, BreachMonitor] = {}
        self.calibrations: dict[str, ScoreCalibration] = {}
        self.score_aucs: dict[str, ScoreHistograms] = {}  # subgroup/BPSN/BNSP AUC state per model
        self.generations: dict[str, GenerationMetrics] = {}  # per model with generation events (LLM responses)
        # (model, event_id) of recent generations, oldest first and bounded like the journal: the dedup store
        # of generations without a prediction, which the prediction index does not hold.
        self.generation_ids: dict[tuple[str, str], int] = {}
        # Anytime-valid decisions on the generation fractions, per model (created with its first generation).
        self.generation_decisions: dict[str, GenerationDecisions] = {}
        self.response_scorer = ResponseScorer()
        self.prompt_groups = PromptGroups()  # groups of untagged generations, from their prompt
        self.onsets: list[Onset] = []
        self.drift_events: list[DriftEvent] = []
        # event_id -> (model metrics, sequence number) of every held prediction:
        # the dedup store and the join index for late labels at once.
        self.index: dict[str, tuple[GroupMetrics, int]] = {}
        # event_id -> entries of derived outputs (e.g. the debiased scores of
        # the same prediction), which share its outcome but not its stats.
        self.derived_index: dict[str, list[tuple[GroupMetrics, int]]] = {}
        self.derived_models: set[str] = set()
        # event_id -> entries of predictions of the same event by further models (the index holds the
        # first model's): each is counted for its own model, and the event's outcome labels them all.
        self.shared_index: dict[str, list[tuple[GroupMetrics, int]]] = {}
        self.early_outcomes: dict[str, int] = {}  # event_id -> label, oldest first
        # event_id -> label of outcomes counted from their prediction copy (dedup; oldest first, bounded
        # like early_outcomes: a copy redelivered after that many newer ones would count again).
        self.labeled_from_copy: dict[str, int] = {}
        self.stats = PipelineStats()
        self.position = 0  # events seen so far, valid or not
        self._capacity_warned: set[str] = set()
        self.lock = threading.Lock()

    # -- entry points ---------------------------------------------------------
    def process_lines(self, lines: list[bytes | str]) -> BatchResult:
        parse = self.parser.parse
        return self.process_events([parse(line) for line in lines])

    def process_events(
        self, events: list[Event | Rejection], derived: dict[int, list[Event]] | None = None
    ) -> BatchResult:
        """Apply a batch. ``derived`` maps the batch position of a prediction to
        more predictions of the same event under other model names (outputs
        such as ``credit-risk:debiased``): they are tracked like any model,
        follow the fate of their source (dropped with it when it is a
        duplicate) and take its label, early or late."""
        started = time.perf_counter()
        # Outside the lock: scoring responses (VADER) is the slow part, and a scrape must not wait for it.
        responses = self._score_responses(events)
        with self.lock:
            result = self._apply(events, derived or {}, responses)
        self._observe_batch(time.perf_counter() - started)
        return result

    def _score_responses(self, events: list[Event | Rejection]) -> dict[int, tuple[bool, float, float]]:
        """Batch position -> (refused, compound sentiment, toxic: 1.0 / 0.0, NaN without a response classifier)
        of every generation in the batch. A response whose scoring raises costs its own event (replaced by an
        internal_error rejection), not the batch."""
        positions = [i for i, e in enumerate(events) if e.__class__ is not Rejection and e.response is not None]
        if not positions:
            return {}
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
        metrics = self._metrics_for(model)
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
        decisions = self.generation_decisions.get(model)
        if decisions is None:
            # The toxic share takes part (and a share of the family error) only with a response classifier.
            metrics = GENERATION_DECISION_METRICS if self.response_scorer.classifier is not None else (
                GENERATION_DECISION_METRICS[:2])
            decisions = self.generation_decisions[model] = GenerationDecisions(
                model, metrics=metrics, **self._decision_settings(self.models[model]))
        return decisions

    # -- internals --------------------------------------------------------------
    def _metrics_for(self, model: str) -> GroupMetrics:
        metrics = self.models.get(model)
        if metrics is None:
            c = self.config
            metrics = self.models[model] = GroupMetrics(
                model,
                attributes=c.attributes,
                intersections=[tuple(p) for p in c.intersections],
                count_windows=c.count_windows,
                time_windows_seconds=c.time_windows_seconds,
                journal_capacity=c.journal_capacity,
                search_intersections=c.search_intersections(),
                max_group_values=c.max_group_values,
                max_attributes=c.max_attributes,
            )
            self.breach_monitors[model] = self._new_breach_monitor(metrics)
            self.calibrations[model] = ScoreCalibration(min_labeled=c.min_group_size)
            self.score_aucs[model] = ScoreHistograms()
            self.drift_monitors[model] = self._new_drift_monitor(model)
        return metrics

    def _new_breach_monitor(self, metrics: GroupMetrics) -> BreachMonitor:
        return BreachMonitor(metrics.model, subgroup_attributes=sorted(metrics.search_only),
                             **self._decision_settings(metrics))

    def _decision_settings(self, metrics: GroupMetrics) -> dict:
        """The breach decisions' settings shared by a model's prediction and generation decisions."""
        c = self.config
        regular = len(c.attributes) + len(c.intersections) if c.attributes else c.max_attributes
        return dict(
            thresholds=ModelThresholds(c, metrics.model),
            attribute_budget=regular,
            family_error=c.family_error / c.workers,
            min_group_size=c.min_group_size,
            max_decision_groups=c.max_decision_groups,
            max_subgroup_cells=c.max_subgroup_cells,
            block_events=c.decision_block_events,
            scales=c.decision_scales,
            staggers=c.decision_staggers,
            lifetime=c.decision_block_lifetime,
            check_events=c.decision_check_events,
            check_seconds=c.decision_check_seconds,
        )

    def apply_capacity_settings(self) -> None:
        """Bring restored models to this config's caps (a snapshot holds the caps it was written with)."""
        c = self.config
        for metrics in self.models.values():
            metrics.max_attributes = c.max_attributes
            for index in metrics.index.values():
                index.capacity = max(c.max_group_values, 2)

    def restart_decisions(self) -> None:
        """Start every model's breach decisions and drift detectors afresh (after their settings changed); counts stay.
        The decisions are anytime-valid from any start, so a fresh start keeps their error guarantee."""
        self.breach_monitors = {model: self._new_breach_monitor(m) for model, m in self.models.items()}
        self.generation_decisions = {}  # created afresh with each model's next generation
        self.drift_monitors = {model: self._new_drift_monitor(model) for model in self.models}

    def _new_drift_monitor(self, model: str) -> DriftMonitor:
        c = self.config
        return DriftMonitor(model, c.drift_detector, block_events=c.drift_block_events,
                            group_block_events=c.drift_group_block_events,
                            min_block_group_events=c.drift_min_block_group_events)

    def _apply(self, events: list[Event | Rejection], derived: dict[int, list[Event]],
               responses: dict[int, tuple[bool, float, float]]) -> BatchResult:
        stats = self.stats
        index = self.index
        early = self.early_outcomes
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
                if self._no_room_for(event.model):
                    rejected.append((i, self._over_model_capacity(event.model)))
                    continue
                _remember(self.generation_ids, (event.model, event_id), 1, self.config.journal_capacity)
                batch_events, batch_scores, batch_positions = generations.setdefault(event.model, ([], [], []))
                batch_events.append(event)
                batch_scores.append(responses[i])
                batch_positions.append(i)
                if event.prediction is None:
                    self._metrics_for(event.model)  # the model counts against max_models from its first event
                    continue
            if event.prediction is None:
                copy = event.prediction_copy
                if copy is not None and self._no_room_for(copy.model):
                    rejected.append((i, self._over_model_capacity(copy.model)))
                    continue
                outcomes.append((event_id, event.label, event.ts, event.prediction_copy))
                continue
            held = index.get(event_id)
            if held is not None and (held[0].model == event.model or self._holds(event_id, event.model)):
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
                    batch = batches[model] = _ModelBatch(self._metrics_for(model))
                # Bound per model: this loop is the per-event cost of the core.
                metrics, model_events = batch.metrics, batch.events
                first_seq = metrics.journal.next_seq
                add_event, add_position = model_events.append, batch.positions.append
            if held is None:
                index[event_id] = (metrics, first_seq + len(model_events))
            else:  # the same event scored by another model too (e.g. a shadow model): not a duplicate
                self.shared_index.setdefault(event_id, []).append((metrics, first_seq + len(model_events)))
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
            metrics = batch.metrics
            detector = self.drift_monitors[model]
            breach = self.breach_monitors[model]
            size = metrics.journal.capacity
            for start in range(0, len(batch.events), size):
                ids, prediction, label, score, ts, groups, positions = batch.columns(start, start + size)
                codes, dropped = metrics.add(ids, prediction, label, score, ts, groups)
                self._forget(dropped, metrics)
                names = {attribute: values.values for attribute, values in metrics.index.items()}
                reported = {a: codes[a] for a in metrics.reported}
                drift += detector.update(reported, names, prediction, self.position + positions, ts)
                n_groups = {a: len(names[a]) for a in reported}
                self.calibrations[model].observe(reported, n_groups, prediction, score, label)
                self.score_aucs[model].observe(reported, n_groups, score, label)
                onsets += breach.observe(codes, prediction, label, names, self.position + positions, ts,
                                         now=self.clock())
                newest = float(ts.max())
                stats.last_event_ts[model] = max(stats.last_event_ts.get(model, newest), newest)
        for model, (batch_events, scores, gen_positions) in generations.items():
            onsets += self._add_generations(model, batch_events, scores, self.position + gen_positions[-1])
        if outcomes:
            self._apply_outcomes(outcomes)

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
            "attribute": sum(m.untracked_attributes for m in self.models.values()),
            "group_value": sum(m.folded_group_values for m in self.models.values()),
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
        return model not in self.models and len(self.models) >= self.config.max_models

    def _over_model_capacity(self, model: str) -> Rejection:
        return Rejection("over_capacity", f"model {model[:80]!r} would be model number {len(self.models) + 1}, past "
                                          f"max_models = {self.config.max_models}")

    def _add_derived(self, accepted: list[tuple[int, Event, list[Event]]], batches: dict[str, _ModelBatch]) -> None:
        derived_index = self.derived_index
        for position, source, extras in accepted:
            for event in extras:
                batch = batches.get(event.model)
                if batch is None:
                    self.derived_models.add(event.model)
                    batch = batches[event.model] = _ModelBatch(self._metrics_for(event.model))
                event.label = source.label
                entry = (batch.metrics, batch.metrics.journal.next_seq + len(batch.events))
                derived_index.setdefault(source.event_id, []).append(entry)
                batch.events.append(event)
                batch.positions.append(position)

    def _holds(self, event_id: str, model: str) -> bool:
        """Whether a prediction of ``event_id`` by ``model`` is held besides the index's first one."""
        return any(m.model == model for m, _ in self.shared_index.get(event_id, ()))

    def _forget(self, event_ids: list[str], metrics: GroupMetrics) -> None:
        """Drop index entries of events the journal of ``metrics`` no longer holds."""
        if metrics.model not in self.derived_models:
            index, shared = self.index, self.shared_index
            for event_id in event_ids:
                entry = index.get(event_id)
                others = shared.get(event_id) if shared else None
                if others is None:
                    if entry is not None and entry[0] is metrics:
                        del index[event_id]
                    continue
                if entry is not None and entry[0] is metrics:  # the next model's entry takes its place
                    index[event_id] = others.pop(0)
                else:
                    others[:] = [e for e in others if e[0] is not metrics]
                if not others:
                    del shared[event_id]
            return
        for event_id in event_ids:
            entries = self.derived_index.get(event_id)
            if entries:
                entries[:] = [e for e in entries if e[0] is not metrics]
                if not entries:
                    del self.derived_index[event_id]

    def _apply_outcomes(self, outcomes: list[tuple[str, int, float, PredictionCopy | None]]) -> None:
        counts = self.stats.outcomes
        early = self.early_outcomes
        index = self.index
        # Outcomes of held predictions, per model: seq -> label, first one wins.
        found: dict[int, tuple[GroupMetrics, dict[int, int]]] = {}
        arrived: dict[tuple[int, int], float] = {}  # (id(metrics), seq) -> outcome time
        unheld: dict[str, list[tuple[PredictionCopy, int, float]]] = {}  # model -> (copy, label, outcome time)
        shared_entries: set[tuple[int, int]] = set()  # labels of further models' predictions: not counted again
        for event_id, label, outcome_ts, copy in outcomes:
            entry = index.get(event_id)
            if entry is None and copy is not None:
                # From `fairwatch join`, which forwarded the prediction earlier on the same partition:
                # this worker has read past it, so it is not coming here. Count the label from the copy.
                if event_id in self.labeled_from_copy:
                    counts[_repeat(self.labeled_from_copy[event_id], label)] += 1
                    continue
                _remember(self.labeled_from_copy, event_id, label, self.config.early_outcome_capacity)
                unheld.setdefault(copy.model, []).append((copy, label, outcome_ts))
                continue
            if entry is None:
                if event_id in early:
                    counts[_repeat(early[event_id], label)] += 1
                    continue
                counts["early"] += 1
                if _remember(early, event_id, label, self.config.early_outcome_capacity):
                    counts["orphaned"] += 1
                continue
            metrics, seq = entry
            group = found.get(id(metrics))
            if group is None:
                group = found[id(metrics)] = (metrics, {})
            pending = group[1]
            if seq in pending:
                counts[_repeat(pending[seq], label)] += 1
                continue
            pending[seq] = label
            arrived[(id(metrics), seq)] = outcome_ts
            for other_metrics, other_seq in self.shared_index.get(event_id, ()):
                group = found.get(id(other_metrics))
                if group is None:
                    group = found[id(other_metrics)] = (other_metrics, {})
                if other_seq not in group[1]:
                    group[1][other_seq] = label
                    arrived[(id(other_metrics), other_seq)] = outcome_ts
                    shared_entries.add((id(other_metrics), other_seq))
            for derived_metrics, derived_seq in self.derived_index.get(event_id, ()):
                group = found.get(id(derived_metrics))
                if group is None:
                    group = found[id(derived_metrics)] = (derived_metrics, {})
                group[1].setdefault(derived_seq, label)
        for model, copies in unheld.items():
            self._apply_unheld(model, copies)
        for metrics, pending in found.values():
            seqs = np.fromiter(pending, dtype=np.int64, count=len(pending))
            labels = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
            known = metrics.journal.label[metrics.journal.positions(seqs)]
            new = known == NO_LABEL
            if metrics.model not in self.derived_models:  # derived outputs echo their source's counts
                counted = np.ones(seqs.size, dtype=bool)
                if shared_entries:  # an outcome is counted once, for the first model that held its event
                    counted = np.array([(id(metrics), s) not in shared_entries for s in seqs.tolist()])
                same = int((counted & ~new & (known == labels)).sum())
                counts["joined"] += int((counted & new).sum())
                counts["duplicate"] += same
                counts["conflicting"] += int((counted & ~new).sum()) - same
            if not new.any():
                continue
            codes, prediction, score, ts = metrics.label(seqs[new], labels[new])
            delay = None  # derived outputs have no outcome times of their own, nor calibration
            if metrics.model not in self.derived_models:
                key = id(metrics)
                delay = np.array([arrived[(key, s)] for s in seqs[new].tolist()]) - ts
            self._observe_labels(metrics, codes, prediction, score, labels[new], delay)

    def _apply_unheld(self, model: str, outcomes: list[tuple[PredictionCopy, int, float]]) -> None:
        """Label cells (since start), label statistics of the decisions and calibration, from copies."""
        metrics = self._metrics_for(model)
        prediction = np.array([c.prediction for c, _, _ in outcomes], dtype=np.int64)
        labels = np.array([label for _, label, _ in outcomes], dtype=np.int64)
        codes = metrics.label_unheld(prediction, labels, [c.groups for c, _, _ in outcomes])
        score = np.array([c.score for c, _, _ in outcomes], dtype=np.float64)  # None -> NaN
        delay = np.array([t - c.ts for c, _, t in outcomes])
        self._observe_labels(metrics, codes, prediction, score, labels, delay)
        self.stats.outcomes["joined_from_copy"] += len(outcomes)

    def _observe_labels(self, metrics: GroupMetrics, codes: dict[str, np.ndarray], prediction: np.ndarray,
                        score: np.ndarray, labels: np.ndarray, delay: np.ndarray | None) -> None:
        """New labels into the breach decisions and the score AUCs, and (not for derived outputs) the per-group
        calibration."""
        names = {attribute: values.values for attribute, values in metrics.index.items()}
        self.breach_monitors[metrics.model].observe_labels(codes, prediction, labels, names)
        reported = {a: codes[a] for a in metrics.reported if a in codes}
        self.score_aucs[metrics.model].observe(reported, {a: len(names[a]) for a in reported}, score, labels)
        if metrics.model not in self.derived_models:
            reported = {a: codes[a] for a in metrics.reported}
            self.calibrations[metrics.model].observe_labels(
                reported, {a: len(names[a]) for a in reported}, prediction, score, labels, delay
            )

    def _observe_batch(self, seconds: float) -> None:
        stats = self.stats
        stats.batch_seconds_sum += seconds
        for i, bound in enumerate(BATCH_SECONDS_BUCKETS):
            if seconds <= bound:
                stats.batch_seconds_buckets[i] += 1
                break
