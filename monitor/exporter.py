"""Prometheus exposition of a pipeline, read at scrape time.

A custom collector turns the pipeline's count rows into metric families when
Prometheus scrapes, so the per-event path never touches prometheus-client.
Counters are cumulative since start and additive across workers; gauges are
what this worker sees. Groups are exported once they reach the privacy floor;
the first ``max_groups_per_attribute`` of them (so mostly the largest) keep
their own label for good, later ones are summed into ``other``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Exemplar, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fairwatch.monitor import metric_names as names
from fairwatch.monitor.breach import worst_per_metric
from fairwatch.monitor.counts import FN, FP, N, POS, SCORE_SUM, SCORED, TN, TP
from fairwatch.monitor.gaps import all_gaps
from fairwatch.monitor.generation.generation_gaps import generation_gaps
from fairwatch.monitor.pipeline import BATCH_SECONDS_BUCKETS, Pipeline
from fairwatch.monitor.rates import PROPORTIONS, group_rates, proportion
from fairwatch.monitor.score_auc import bias_aucs

GROUP_LABELS = [names.MODEL, names.ATTRIBUTE, names.GROUP]
CELL_COLUMNS = {
    "predictions": (N,),
    "positives": (POS,),
    "scored": (SCORED,),
    "labeled": (TP, FP, TN, FN),
    "tp": (TP,),
    "fp": (FP,),
    "tn": (TN,),
    "fn": (FN,),
}
assert tuple(CELL_COLUMNS) == names.COUNTER_CELLS


class GroupLabels:
    """Stable group -> label value assignment for one (model, attribute), kept in ``label_of`` (which the
    pipeline's snapshot holds)."""

    def __init__(self, max_groups: int, privacy_floor: int, label_of: dict[str, str] | None = None) -> None:
        self.max_groups = max_groups
        self.privacy_floor = privacy_floor
        self.label_of: dict[str, str] = {} if label_of is None else label_of

    def update(self, since_start_rows: np.ndarray, groups: list[str]) -> None:
        self.update_counts(since_start_rows[: len(groups), N], groups)

    def update_counts(self, n: np.ndarray, groups: list[str]) -> None:
        """Give a label to the groups with ``n`` (events per group since start: predictions, or responses
        of a model's generations) at or above the privacy floor."""
        n = np.asarray(n)[: len(groups)]
        own = None  # groups with a label of their own, counted once a new group needs one
        for g in np.argsort(-n, kind="stable"):
            if n[g] < self.privacy_floor:
                break
            name = groups[g]
            if name not in self.label_of:
                if own is None:
                    own = sum(1 for group, label in self.label_of.items() if label == group != names.OTHER_GROUP)
                if own < self.max_groups and name != names.OTHER_GROUP:
                    self.label_of[name] = name
                    own += 1
                else:
                    self.label_of[name] = names.OTHER_GROUP

    def merge_rows(self, rows: np.ndarray, groups: list[str]) -> dict[str, np.ndarray]:
        """Rows summed per exported label; unexported groups left out."""
        merged: dict[str, np.ndarray] = {}
        for g, name in enumerate(groups):
            label = self.label_of.get(name)
            if label is None or g >= rows.shape[0]:
                continue
            if label in merged:
                merged[label] = merged[label] + rows[g]
            else:
                merged[label] = rows[g].copy()
        return merged


class FairwatchCollector(Collector):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def _group_labels(self, model: str, attribute: str, *, assign: bool = False) -> GroupLabels:
        """The labels of ``(model, attribute)``; ``assign=True`` (under the pipeline's lock, which a snapshot
        takes too) to give labels to new groups, in ``Pipeline.export_labels``."""
        c = self.pipeline.config
        stored = self.pipeline.export_labels
        label_of = stored.setdefault((model, attribute), {}) if assign else stored.get((model, attribute), {})
        return GroupLabels(c.max_groups_per_attribute, c.privacy_floor, label_of)

    def _assign_labels(self, snapshots: dict, generations: dict) -> None:
        """Label the groups that reached the privacy floor: predictions' groups first, then generations'."""
        for model, windows in snapshots.items():
            since_start = windows[0]
            for attribute, rows in since_start.rows.items():
                self._group_labels(model, attribute, assign=True).update(rows, since_start.groups[attribute])
        for model, windows in generations.items():
            groups_of = snapshots[model][0].groups
            for attribute, stats in windows["all"].items():
                self._group_labels(model, attribute, assign=True).update_counts(stats.responses(),
                                                                                groups_of[attribute])

    def collect(self) -> Iterator:
        pipeline = self.pipeline
        config = pipeline.config
        with pipeline.lock:
            monitors = pipeline.monitors
            snapshots = {model: m.metrics.snapshot() for model, m in monitors.items()}
            exemplars = {model: recent_positive_ids(m.metrics) if config.exemplars else {}
                         for model, m in monitors.items()}
            stats = pipeline.stats
            events = {"valid": stats.valid, "invalid": stats.invalid, "duplicate": stats.duplicates}
            reasons = dict(stats.invalid_reasons)
            outcomes = dict(stats.outcomes)
            last_ts = dict(stats.last_event_ts)
            buckets = list(stats.batch_seconds_buckets)
            batch_sum = stats.batch_seconds_sum
            over_capacity = pipeline.over_capacity()
            drift = list(pipeline.drift_events)
            decisions = {model: m.decision_state() for model, m in monitors.items()}
            for model, g in pipeline.generation_decisions.items():  # the generation fractions' decisions, same metrics
                states, _, onset_list = decisions.get(model, ({}, 0, []))
                decisions[model] = ({**states, **g.states}, len(onset_list) + len(g.onsets), onset_list + g.onsets)
            auc_tables = {model: m.auc_tables() for model, m in monitors.items()}
            generations = {model: snapshot for model, (snapshot, _) in pipeline.generation_snapshots().items()}
            estimates = {model: m.label_free() for model, m in monitors.items()}
            self._assign_labels(snapshots, generations)

        counters = CounterMetricFamily(
            names.GROUP_EVENTS, "Events per group and cell since start (sum over workers)",
            labels=[*GROUP_LABELS, names.CELL],
        )
        score_sums = CounterMetricFamily(
            names.GROUP_SCORE_SUM, "Sum of model scores per group since start", labels=GROUP_LABELS
        )
        window_labels = [*GROUP_LABELS, names.METRIC, names.WINDOW]
        rate = GaugeMetricFamily(names.GROUP_RATE, "Per-group rate in a window", labels=window_labels)
        rate_lower = GaugeMetricFamily(names.GROUP_RATE_LOWER, "95% Wilson lower bound", labels=window_labels)
        rate_upper = GaugeMetricFamily(names.GROUP_RATE_UPPER, "95% Wilson upper bound", labels=window_labels)
        window_events = GaugeMetricFamily(
            names.GROUP_WINDOW_EVENTS, "Predictions per group in a window", labels=[*GROUP_LABELS, names.WINDOW]
        )
        gap_labels = [names.MODEL, names.ATTRIBUTE, names.METRIC, names.WINDOW]
        gap = GaugeMetricFamily(
            names.GAP, "Gap between groups at or above the minimum size, in a window", labels=gap_labels
        )
        gap_lower = GaugeMetricFamily(names.GAP_LOWER, "95% lower bound of the gap (display)", labels=gap_labels)
        gap_upper = GaugeMetricFamily(names.GAP_UPPER, "95% upper bound of the gap (display)", labels=gap_labels)

        for model, windows in snapshots.items():
            since_start = windows[0]
            for attribute, rows in since_start.rows.items():
                groups = since_start.groups[attribute]
                labels = self._group_labels(model, attribute)
                latest = exemplars[model].get(attribute, {})
                for label, row in labels.merge_rows(rows, groups).items():
                    for cell, columns in CELL_COLUMNS.items():
                        exemplar = None
                        # An event id beside group membership: only for a group with as many
                        # positives as the privacy floor, so an id never singles anyone out.
                        if cell == "positives" and label in latest and row[POS] >= config.privacy_floor:
                            exemplar = Exemplar({"event_id": latest[label]}, 1.0)
                        counters.add_metric([model, attribute, label, cell], float(row[list(columns)].sum()),
                                            exemplar=exemplar)
                    score_sums.add_metric([model, attribute, label], float(row[SCORE_SUM]))
            for window in windows:
                for attribute, rows in window.rows.items():
                    groups = window.groups[attribute]
                    labels = self._group_labels(model, attribute)
                    merged = labels.merge_rows(rows, groups)
                    if merged:
                        label_names = list(merged)
                        merged_rows = np.vstack([merged[k] for k in label_names])
                        rates = group_rates(merged_rows)
                        for i, label in enumerate(label_names):
                            if merged_rows[i, N] < config.privacy_floor:
                                continue
                            window_events.add_metric([model, attribute, label, window.window], merged_rows[i, N])
                            for metric in names.RATE_METRICS:
                                value, lower, upper = (a[i] for a in rates[metric])
                                if metric in PROPORTIONS:
                                    trials = proportion(merged_rows[i : i + 1], metric)[1][0]
                                else:
                                    trials = merged_rows[i, SCORED]
                                if trials < config.privacy_floor or math.isnan(value):
                                    continue
                                key = [model, attribute, label, metric, window.window]
                                rate.add_metric(key, value)
                                if not math.isnan(lower):
                                    rate_lower.add_metric(key, lower)
                                    rate_upper.add_metric(key, upper)
                    eligible = np.flatnonzero(rows[:, N] >= config.min_group_size)
                    for metric, g in all_gaps(rows, eligible).items():
                        if math.isnan(g.value):
                            continue
                        key = [model, attribute, metric, window.window]
                        gap.add_metric(key, g.value)
                        gap_lower.add_metric(key, g.lower)
                        gap_upper.add_metric(key, g.upper)
        yield from (counters, score_sums, rate, rate_lower, rate_upper, window_events, gap, gap_lower, gap_upper)
        yield from self._auc_families(snapshots, auc_tables)
        yield from self._generation_families(generations, snapshots)
        yield from self._decision_families(decisions)
        yield from self._estimate_families(estimates)

        drift_counts: dict[tuple, int] = {}
        drift_last: dict[tuple, float] = {}
        for d in drift:
            # A group's rate drifted (group: its exported label, "other" past the cap or
            # under the privacy floor), or a gap of the attribute (group: empty).
            group = "" if d.group is None else self._group_labels(d.model, d.attribute).label_of.get(
                d.group, names.OTHER_GROUP)
            key = (d.model, d.attribute, d.metric, group)
            drift_counts[key] = drift_counts.get(key, 0) + 1
            drift_last[key] = max(drift_last.get(key, d.ts), d.ts)
        drift_labels = [names.MODEL, names.ATTRIBUTE, names.METRIC, names.GROUP]
        drift_family = CounterMetricFamily(names.DRIFT_EVENTS, "Drift changes detected", labels=drift_labels)
        drift_time = GaugeMetricFamily(
            names.DRIFT_LAST_TIMESTAMP, "Event time of the latest drift change", labels=drift_labels
        )
        for key, count in drift_counts.items():
            drift_family.add_metric(list(key), count)
            drift_time.add_metric(list(key), drift_last[key])
        yield drift_family
        yield drift_time

        events_family = CounterMetricFamily(names.EVENTS, "Input events by status", labels=[names.STATUS])
        for status in names.EVENT_STATUSES:
            events_family.add_metric([status], events[status])
        yield events_family
        invalid = CounterMetricFamily(names.INVALID_EVENTS, "Invalid input events by reason", labels=[names.REASON])
        for reason in names.REJECTION_REASONS:
            invalid.add_metric([reason], reasons.get(reason, 0))
        yield invalid
        outcomes_family = CounterMetricFamily(names.OUTCOMES, "Outcome events by status", labels=[names.STATUS])
        for status in names.OUTCOME_STATUSES:
            outcomes_family.add_metric([status], outcomes.get(status, 0))
        yield outcomes_family
        capped = CounterMetricFamily(names.OVER_CAPACITY, "What the memory caps turned away", labels=[names.KIND])
        for kind in names.CAPACITY_KINDS:
            capped.add_metric([kind], over_capacity[kind])
        yield capped
        histogram = HistogramMetricFamily(names.BATCH_SECONDS, "Seconds to process one batch of events")
        cumulative, pairs = 0, []
        for bound, count in zip(BATCH_SECONDS_BUCKETS, buckets):
            cumulative += count
            pairs.append(("+Inf" if math.isinf(bound) else str(bound), cumulative))
        histogram.add_metric([], pairs, batch_sum)
        yield histogram
        last = GaugeMetricFamily(names.LAST_EVENT_TIMESTAMP, "Event time of the newest event", labels=[names.MODEL])
        for model, ts in last_ts.items():
            last.add_metric([model], ts)
        yield last


    def _auc_families(self, snapshots, auc_tables) -> Iterator:
        """Subgroup, BPSN and BNSP AUC per exported group label (groups folded into ``other`` summed first)."""
        labels = [*GROUP_LABELS, names.METRIC]
        value = GaugeMetricFamily(names.GROUP_SCORE_AUC, "Subgroup, BPSN and BNSP AUC since start", labels=labels)
        lower = GaugeMetricFamily(names.GROUP_SCORE_AUC_LOWER, "95% Hanley-McNeil lower bound", labels=labels)
        upper = GaugeMetricFamily(names.GROUP_SCORE_AUC_UPPER, "95% Hanley-McNeil upper bound", labels=labels)
        floor = self.pipeline.config.privacy_floor
        for model, tables in auc_tables.items():
            groups_of = snapshots[model][0].groups
            for attribute, table in tables.items():
                merged = self._group_labels(model, attribute).merge_rows(table, groups_of[attribute])
                if not merged:
                    continue
                label_names = list(merged)
                estimates = bias_aucs(np.stack([merged[k] for k in label_names]), table.sum(axis=0))
                own = estimates[names.AUC_METRICS[0]]  # the group's own labeled, scored events
                for i, label in enumerate(label_names):
                    if own.positives[i] + own.negatives[i] < floor:
                        continue
                    for metric in names.AUC_METRICS:
                        e = estimates[metric]
                        if math.isnan(e.value[i]):
                            continue
                        key = [model, attribute, label, metric]
                        value.add_metric(key, float(e.value[i]))
                        lower.add_metric(key, float(e.lower[i]))
                        upper.add_metric(key, float(e.upper[i]))
        yield from (value, lower, upper)

    def _generation_families(self, generations, snapshots) -> Iterator:
        """Per exported group label: generation counters since start, rates, responses and sentiment distance per
        window; per attribute: the gaps over groups with at least ``min_group_size`` responses."""
        config = self.pipeline.config
        group_labels = [*GROUP_LABELS, names.WINDOW]
        rate_labels = [*GROUP_LABELS, names.METRIC, names.WINDOW]
        gap_labels = [names.MODEL, names.ATTRIBUTE, names.METRIC, names.WINDOW]
        counters = CounterMetricFamily(names.GENERATION_RESPONSES, "Generated responses per group and cell since "
                                       "start (sum over workers)", labels=[*GROUP_LABELS, names.CELL])
        rate = GaugeMetricFamily(names.GENERATION_GROUP_RATE, "Per-group refusal rate, negative share, mean "
                                 "sentiment and toxic share of responses in a window", labels=rate_labels)
        rate_lower = GaugeMetricFamily(names.GENERATION_GROUP_RATE_LOWER, "95% lower bound", labels=rate_labels)
        rate_upper = GaugeMetricFamily(names.GENERATION_GROUP_RATE_UPPER, "95% upper bound", labels=rate_labels)
        responses = GaugeMetricFamily(names.GENERATION_GROUP_WINDOW_RESPONSES, "Responses per group in a window",
                                      labels=group_labels)
        distance = GaugeMetricFamily(names.GENERATION_SENTIMENT_DISTANCE, "Wasserstein-1 between the group's and "
                                     "the rest's sentiment distributions", labels=group_labels)
        gap = GaugeMetricFamily(names.GENERATION_GAP, "Gap between groups' generation statistics in a window",
                                labels=gap_labels)
        gap_lower = GaugeMetricFamily(names.GENERATION_GAP_LOWER, "95% lower bound (display)", labels=gap_labels)
        gap_upper = GaugeMetricFamily(names.GENERATION_GAP_UPPER, "95% upper bound (display)", labels=gap_labels)
        floor = config.privacy_floor
        for model, windows in generations.items():
            groups_of = snapshots[model][0].groups
            for attribute, stats in windows["all"].items():
                labels = self._group_labels(model, attribute)
                label_names, merged = stats.regrouped(lambda t: labels.merge_rows(t, groups_of[attribute]))
                refusals, _ = merged.refusal.counts()
                negatives, _ = merged.negative.counts()
                toxic, classified = merged.toxic.counts()
                # The classifier's cells only once a response classifier has scored something for the attribute.
                exported = names.GENERATION_CELLS if classified.sum() > 0 else names.GENERATION_CELLS[:3]
                for i, label in enumerate(label_names):
                    cells = (merged.responses()[i], refusals[i], negatives[i], classified[i], toxic[i])
                    for cell, value in zip(exported, cells):
                        counters.add_metric([model, attribute, label, cell], float(value))
            for window, by_attribute in windows.items():
                for attribute, stats in by_attribute.items():
                    labels = self._group_labels(model, attribute)
                    label_names, merged = stats.regrouped(lambda t: labels.merge_rows(t, groups_of[attribute]))
                    n = merged.responses()
                    rates = merged.rates()
                    distances = merged.sentiment_distance()
                    for i, label in enumerate(label_names):
                        if n[i] < floor:
                            continue
                        responses.add_metric([model, attribute, label, window], float(n[i]))
                        if not math.isnan(distances[i]):
                            distance.add_metric([model, attribute, label, window], float(distances[i]))
                        for metric, (value, lower, upper) in rates.items():
                            if math.isnan(value[i]):
                                continue
                            key = [model, attribute, label, metric, window]
                            rate.add_metric(key, float(value[i]))
                            if not math.isnan(lower[i]):
                                rate_lower.add_metric(key, float(lower[i]))
                                rate_upper.add_metric(key, float(upper[i]))
                    eligible = np.flatnonzero(stats.responses() >= config.min_group_size)
                    for metric, g in generation_gaps(stats, eligible).items():
                        if math.isnan(g.value):
                            continue
                        key = [model, attribute, metric, window]
                        gap.add_metric(key, g.value)
                        gap_lower.add_metric(key, g.lower)
                        gap_upper.add_metric(key, g.upper)
        yield from (counters, rate, rate_lower, rate_upper, responses, distance, gap, gap_lower, gap_upper)

    def _decision_families(self, decisions) -> Iterator:
        labels = [names.MODEL, names.ATTRIBUTE, names.METRIC]
        bound = GaugeMetricFamily(names.DECISION_BOUND, "Anytime-valid bound the breach decision used", labels=labels)
        threshold = GaugeMetricFamily(names.DECISION_THRESHOLD, "Breach threshold", labels=labels)
        breach = GaugeMetricFamily(names.DECISION_BREACH, "1 while a breach is declared", labels=labels)
        onsets = CounterMetricFamily(names.BREACH_ONSETS, "Breaches declared", labels=labels)
        for model, (states, _, onset_list) in decisions.items():
            counts: dict[tuple[str, str], int] = {}
            for o in onset_list:
                counts[(o.attribute, o.metric)] = counts.get((o.attribute, o.metric), 0) + 1
            for (attribute, metric), state in worst_per_metric(states).items():  # a search: its worst cell
                key = [model, attribute, metric]
                if not math.isnan(state.bound):
                    bound.add_metric(key, state.bound)
                threshold.add_metric(key, state.threshold)
                breach.add_metric(key, 1.0 if state.breached else 0.0)
                onsets.add_metric(key, counts.get((attribute, metric), 0))
        yield from (bound, threshold, breach, onsets)

    def _estimate_families(self, estimates) -> Iterator:
        floor = self.pipeline.config.privacy_floor
        labels = [*GROUP_LABELS, names.METRIC]
        value = GaugeMetricFamily(names.GROUP_ESTIMATED_RATE, "Rate of unlabeled predictions, from calibrated scores",
                                  labels=labels)
        lower = GaugeMetricFamily(names.GROUP_ESTIMATED_RATE_LOWER, "95% lower bound", labels=labels)
        upper = GaugeMetricFamily(names.GROUP_ESTIMATED_RATE_UPPER, "95% upper bound", labels=labels)
        unlabeled = GaugeMetricFamily(names.GROUP_UNLABELED, "Predictions still without a label", labels=GROUP_LABELS)
        delay = GaugeMetricFamily(names.GROUP_LABEL_DELAY, "Mean delay of late labels", labels=GROUP_LABELS)
        ece = GaugeMetricFamily(names.GROUP_CALIBRATION_ERROR, "Expected calibration error on labeled predictions",
                                labels=GROUP_LABELS)
        reliable = GaugeMetricFamily(names.ESTIMATE_RELIABILITY,
                                     "1: recent labels agree with the calibration the estimates use; 0: drift",
                                     labels=GROUP_LABELS)
        for model, attributes in estimates.items():
            for attribute, (groups, group_estimates, delays, errors, checks) in attributes.items():
                exported = self._group_labels(model, attribute).label_of
                for g, name in enumerate(groups):
                    label = exported.get(name)
                    if label is None or label == names.OTHER_GROUP:  # a sum of groups has no single calibration
                        continue
                    key = [model, attribute, label]
                    e = group_estimates[g]
                    check = checks[g]
                    if check is not None:
                        reliable.add_metric(key, 1.0 if check["reliable"] else 0.0)
                    drifted = check is not None and not check["reliable"]  # withheld: they would mislead
                    if e is not None and e["n_unlabeled"] >= floor and not drifted:
                        unlabeled.add_metric(key, e["n_unlabeled"])
                        for metric, bounds in e["ci"].items():
                            value.add_metric([*key, metric], e[metric])
                            lower.add_metric([*key, metric], bounds[0])
                            upper.add_metric([*key, metric], bounds[1])
                    if not math.isnan(delays[g]):
                        delay.add_metric(key, delays[g])
                    if not math.isnan(errors[g]):
                        ece.add_metric(key, errors[g])
        yield from (value, lower, upper, unlabeled, delay, ece, reliable)


EXEMPLAR_LOOKBACK = 4096
MAX_EXEMPLAR_ID = 100  # OpenMetrics caps an exemplar's labels at 128 characters


def recent_positive_ids(metrics) -> dict[str, dict[str, str]]:
    """Per attribute and group label: the id of the group's latest positive
    prediction among the last few thousand held. Exported as an OpenMetrics
    exemplar on the ``positives`` counter, never as a label, so an incident
    can point at real events without a series per event."""
    journal = metrics.journal
    first = max(journal.oldest_seq, journal.next_seq - EXEMPLAR_LOOKBACK)
    if journal.next_seq <= first:
        return {}
    seqs = np.arange(first, journal.next_seq)
    pos = journal.positions(seqs)
    positive = journal.prediction[pos] == 1
    out: dict[str, dict[str, str]] = {}
    for attribute in metrics.reported:
        codes = journal.codes[attribute][pos]
        names = metrics.index[attribute].values
        latest: dict[str, str] = {}
        for i in np.flatnonzero(positive)[::-1].tolist():
            code = int(codes[i])
            if code < 0 or names[code] in latest:
                continue
            event_id = journal.event_ids[int(pos[i])]
            if event_id is not None and len(event_id) <= MAX_EXEMPLAR_ID:
                latest[names[code]] = event_id
            if len(latest) == len(names):
                break
        out[attribute] = latest
    return out


def make_registry(pipeline: Pipeline) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FairwatchCollector(pipeline))
    return registry


def serve_registry(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1"):
    """Serve ``registry`` on /metrics from a background thread; return (server, actual port).

    The one place that starts a /metrics server (``fairwatch.command_support.serve_registry`` adds the
    command line's error and message); OSError when the port cannot be bound.
    """
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server, server.server_address[1]


def serve_metrics(pipeline: Pipeline, port: int, addr: str = "127.0.0.1"):
    """Serve the pipeline's /metrics on a background thread; return (server, actual port)."""
    return serve_registry(make_registry(pipeline), port, addr)


__all__ = ["FairwatchCollector", "make_registry", "serve_metrics", "serve_registry"]
