"""Everything the core keeps about one model: counts, drift, breach decisions, calibration, score AUCs.

The pipeline keeps one :class:`ModelMonitor` per model name and hands it
column batches: :meth:`ModelMonitor.observe_predictions` for new predictions
and :meth:`ModelMonitor.observe_labels` for labels that arrive later. Readers
(the exporter, the report, the scorer step) call its public reading methods
under the pipeline's lock. It holds no configuration, clock or lock: those
are passed in, so it pickles as plain state (the pipeline's ``__getstate__`` saves it whole).

>>> from fairwatch.monitor.config import MonitorConfig
>>> monitor = ModelMonitor("m", MonitorConfig(count_windows=[], time_windows_seconds=[]))
>>> import numpy as np
>>> drift, onsets, dropped = monitor.observe_predictions(
...     ["a", "b"], np.array([1, 0]), np.array([-1, -1]), np.array([0.9, 0.2]), np.array([1.0, 2.0]),
...     [{"sex": "F"}, {"sex": "M"}], np.array([0, 1]), now=2.0)
>>> monitor.group_names()
{'sex': ['F', 'M']}
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.breach import BreachMonitor, Onset
from fairwatch.monitor.calibration import ScoreCalibration
from fairwatch.monitor.config import ModelThresholds, MonitorConfig
from fairwatch.monitor.counts import FN, FP, NO_LABEL, TN, TP
from fairwatch.monitor.drift import DriftEvent, DriftMonitor
from fairwatch.monitor.group_metrics import GroupMetrics
from fairwatch.monitor.score_auc import ScoreHistograms


def decision_settings(config: MonitorConfig, model: str) -> dict:
    """The breach decisions' settings of ``model``, shared by its prediction and generation decisions."""
    c = config
    regular = len(c.attributes) + len(c.intersections) if c.attributes else c.max_attributes
    return dict(
        thresholds=ModelThresholds(c, model),
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


class ModelMonitor:
    """One model's group metrics, drift detectors, breach decisions, per-group calibration and score AUCs.

    ``derived``: the model is a derived output of another one (e.g. its debiased scores): it takes its
    source's labels, and has no outcome times or calibration of its own.
    """

    def __init__(self, model: str, config: MonitorConfig, *, derived: bool = False) -> None:
        c = config
        self.model = model
        self.derived = derived
        self.metrics = GroupMetrics(
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
        self.calibration = ScoreCalibration(min_labeled=c.min_group_size)
        self.score_auc = ScoreHistograms()
        self.restart_decisions(config)

    # -- settings ------------------------------------------------------------------
    def restart_decisions(self, config: MonitorConfig) -> None:
        """Start the breach decisions and drift detectors afresh under ``config`` (counts stay).
        The decisions are anytime-valid from any start, so a fresh start keeps their error guarantee."""
        c = config
        self.decisions = BreachMonitor(self.model, subgroup_attributes=sorted(self.metrics.search_only),
                                       **decision_settings(c, self.model))
        self.drift = DriftMonitor(self.model, c.drift_detector, block_events=c.drift_block_events,
                                  group_block_events=c.drift_group_block_events,
                                  min_block_group_events=c.drift_min_block_group_events)

    def apply_capacity_settings(self, config: MonitorConfig) -> None:
        """Bring restored counts to ``config``'s caps (a snapshot holds the caps it was written with)."""
        self.metrics.max_attributes = config.max_attributes
        for index in self.metrics.index.values():
            index.capacity = max(config.max_group_values, 2)

    # -- observing -----------------------------------------------------------------
    def observe_predictions(self, event_ids: list[str], prediction: np.ndarray, label: np.ndarray,
                            score: np.ndarray, ts: np.ndarray, groups: list[dict], positions: np.ndarray,
                            *, now: float) -> tuple[list[DriftEvent], list[Onset], list[str]]:
        """New predictions (at most the journal's capacity; ``label`` NO_LABEL where none yet, ``score`` NaN
        where none; ``positions`` their stream positions): (drift events, breach onsets, ids the journal
        dropped to make room)."""
        metrics = self.metrics
        codes, dropped = metrics.add(event_ids, prediction, label, score, ts, groups)
        names = {attribute: values.values for attribute, values in metrics.index.items()}
        reported = {a: codes[a] for a in metrics.reported}
        drift = self.drift.update(reported, names, prediction, positions, ts)
        n_groups = {a: len(names[a]) for a in reported}
        self.calibration.observe(reported, n_groups, prediction, score, label)
        self.score_auc.observe(reported, n_groups, score, label)
        onsets = self.decisions.observe(codes, prediction, label, names, positions, ts, now=now)
        return drift, onsets, dropped

    def label_held(self, seqs: np.ndarray, labels: np.ndarray, arrived: np.ndarray | None) -> None:
        """Labels of held predictions (journal sequence numbers ``seqs``, none labeled yet); ``arrived``:
        the outcome times (None for derived outputs)."""
        codes, prediction, score, ts = self.metrics.label(seqs, labels)
        delay = None if arrived is None or self.derived else arrived - ts
        self.observe_labels(codes, prediction, score, labels, delay)

    def label_unheld(self, prediction: np.ndarray, labels: np.ndarray, groups: list[dict], score: np.ndarray,
                     delay: np.ndarray) -> None:
        """Labels of predictions this worker does not hold, from their copies (label cells since start)."""
        codes = self.metrics.label_unheld(prediction, labels, groups)
        self.observe_labels(codes, prediction, score, labels, delay)

    def observe_labels(self, codes: dict[str, np.ndarray], prediction: np.ndarray, score: np.ndarray,
                       labels: np.ndarray, delay: np.ndarray | None) -> None:
        """New labels into the breach decisions and the score AUCs, and (not for derived outputs) the per-group
        calibration."""
        metrics = self.metrics
        names = {attribute: values.values for attribute, values in metrics.index.items()}
        self.decisions.observe_labels(codes, prediction, labels, names)
        reported = {a: codes[a] for a in metrics.reported if a in codes}
        self.score_auc.observe(reported, {a: len(names[a]) for a in reported}, score, labels)
        if not self.derived:
            reported = {a: codes[a] for a in metrics.reported}
            self.calibration.observe_labels(
                reported, {a: len(names[a]) for a in reported}, prediction, score, labels, delay
            )

    def labels_known(self, seqs: np.ndarray) -> np.ndarray:
        """The labels held for journal sequence numbers ``seqs`` (NO_LABEL where none yet)."""
        journal = self.metrics.journal
        return journal.label[journal.positions(seqs)]

    # -- reading (under the pipeline's lock) ------------------------------------------
    def group_names(self, reported_only: bool = True) -> dict[str, list[str]]:
        """Per attribute, the group names in code order (a copy)."""
        index = self.metrics.index
        attributes = self.metrics.reported if reported_only else list(index)
        return {a: list(index[a].values) for a in attributes}

    def group_counts(self) -> dict[str, int]:
        """Per reported attribute, the number of groups known."""
        index = self.metrics.index
        return {a: len(index[a].values) for a in self.metrics.reported}

    def auc_tables(self) -> dict[str, np.ndarray]:
        """Per reported attribute with labeled scores: a copy of its score histogram table."""
        index, tables = self.metrics.index, self.score_auc.tables
        return {a: self.score_auc.table(a, len(index[a].values)).copy() for a in self.metrics.reported if a in tables}

    def label_free(self) -> dict[str, tuple]:
        """Per reported attribute: (group names, estimated rates, label delay, calibration error, reliability)."""
        c = self.calibration
        out = {}
        for attribute, n in self.group_counts().items():
            out[attribute] = (self.metrics.index[attribute].values[:], c.estimates(attribute, n),
                              c.label_delay(attribute, n), c.calibration_error(attribute, n),
                              c.reliability(attribute, n))
        return out

    def decision_state(self) -> tuple[dict, int, list[Onset]]:
        """(breach states, number of onsets, the onsets) of the decisions (copies)."""
        return dict(self.decisions.states), len(self.decisions.onsets), list(self.decisions.onsets)

    def labels_counted(self, attribute: str) -> int | None:
        """Labels counted since start for ``attribute``, or None when the model does not track it."""
        metrics = self.metrics
        if attribute not in metrics.index:
            return None
        rows = metrics.since_start.counts.get(attribute)
        return int(rows[:, [TP, FP, TN, FN]].sum()) if rows is not None else 0

    def labeled_predictions(self, attribute: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, labels, group names) of the labeled predictions the journal holds, for a tracked
        ``attribute`` (predictions outside its groups left out)."""
        metrics = self.metrics
        journal = metrics.journal
        pos = journal.positions(np.arange(journal.oldest_seq, journal.next_seq))
        label = journal.label[pos]
        codes = journal.codes[attribute][pos]
        keep = (label != NO_LABEL) & (codes >= 0)
        names = np.asarray(metrics.index[attribute].values, dtype=object)
        return journal.score[pos][keep], label[keep], names[codes[keep]]


__all__ = ["ModelMonitor"]
