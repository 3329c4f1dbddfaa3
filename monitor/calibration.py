"""Per-group rates before labels arrive, from scores calibrated per group.

Labels lag predictions by days or months; the rates that need them (TPR,
FPR, PPV...) would be blind until then. For each group we calibrate the
model's score on the group's labeled predictions (histogram binning, each
bin shrunk towards the group's base rate) and take the expected confusion
matrix of its still-unlabeled predictions: NannyML's CBPE idea, but per
group, so that a gap can be estimated before the truth arrives. Intervals
come from a parametric bootstrap: the calibrated probability of each bin
drawn from its Beta posterior, then the unlabeled outcomes drawn from it.

Also per group: label coverage is in the count rows; label delay (outcome
time minus prediction time) and calibration error (expected calibration
error over the bins, for scores in [0, 1]) are kept here.

Counts are additive (mergeable across workers), like everything else.

The estimates rely on each group's calibration staying what the labels seen
so far say it is. ``reliability`` tests that on recent labels (the last
``recent_labels`` to ``2 x recent_labels`` labels of the model, in two
rotating blocks): the positives among them against the count the
since-start calibration expects, a z statistic per group (calibration in
the large). Beyond ``drift_z`` the group's calibration has drifted (concept
drift) and its estimates are marked unreliable: the report flags them and
the exporter withholds them.
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.counts import FN, FP, N_CELLS, TN, TP
from fairwatch.monitor.rates import proportion, safe_ratio

ALL, LABELED, POSITIVE, SCORE_SUM = range(4)  # cells per (group, bin, prediction)
N_BINS = 10
SHRINKAGE = 2.0  # pseudo-labels pulling a sparse bin towards the group's base rate
BOOTSTRAP_DRAWS = 400
ESTIMATED = ("tpr", "fpr", "fnr", "ppv", "accuracy")
# |z| beyond this: calibration drift. A flag for people, looked at on every
# scrape and report, over up to max_groups_per_attribute groups: 4 keeps a
# stationary group's chance of a false flag per look near 6e-5.
DRIFT_Z = 4.0


class ScoreCalibration:
    """Score-bin counts per (attribute, group), since start."""

    def __init__(self, min_labeled: int = 30, seed: int = 0, recent_labels: int = 1000,
                 drift_z: float = DRIFT_Z) -> None:
        self.edges: np.ndarray | None = None
        self.unit_scores = True  # every score seen lies in [0, 1]
        self.min_labeled = min_labeled
        self.tables: dict[str, np.ndarray] = {}  # attribute -> (groups, bins, 2, 4)
        self.delay: dict[str, np.ndarray] = {}  # attribute -> (groups, 2): seconds summed, count
        self._seed = seed
        self.recent_labels = recent_labels
        self.drift_z = drift_z
        # Labels of the previous and the current recent block: attribute -> (groups, bins, 2 [labeled, positive]).
        self.recent: list[dict[str, np.ndarray]] = [{}, {}]
        self._recent_count = 0  # labels in the current block

    def _bins(self, score: np.ndarray) -> np.ndarray:
        if self.edges is None:
            finite = score[~np.isnan(score)]
            if finite.size == 0:
                return np.full(score.shape, -1)
            if finite.min() >= 0 and finite.max() <= 1:
                self.edges = np.linspace(0, 1, N_BINS + 1)[1:-1]
            else:  # an arbitrary scale (e.g. deciles 1..10): quantiles of the first scores
                self.edges = np.unique(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)[1:-1]))
                self.unit_scores = False
        finite = ~np.isnan(score)
        if finite.any() and (score[finite].min() < 0 or score[finite].max() > 1):
            self.unit_scores = False
        return np.where(finite, np.searchsorted(self.edges, np.nan_to_num(score), side="right"), -1)

    def _table(self, attribute: str, n_groups: int) -> np.ndarray:
        n_bins = len(self.edges) + 1
        table = self.tables.get(attribute)
        if table is None or table.shape[0] < n_groups:
            grown = np.zeros((n_groups, n_bins, 2, 4))
            if table is not None:
                grown[: table.shape[0]] = table
            table = self.tables[attribute] = grown
        return table

    def _add(self, attribute, codes, bins, prediction, n_groups, cell, weights=None) -> None:
        keep = (codes >= 0) & (bins >= 0)
        if not keep.any():
            return
        table = self._table(attribute, n_groups)
        n_bins = table.shape[1]
        flat = (codes[keep] * n_bins + bins[keep]) * 2 + prediction[keep]
        size = table.shape[0] * n_bins * 2
        w = None if weights is None else weights[keep]
        table[..., cell] += np.bincount(flat, weights=w, minlength=size)[:size].reshape(table.shape[:3])

    def observe(self, codes: dict[str, np.ndarray], n_groups: dict[str, int], prediction: np.ndarray,
                score: np.ndarray, label: np.ndarray) -> None:
        """New predictions (with inline labels where known)."""
        bins = self._bins(score)
        if self.edges is None:
            return
        labeled = label >= 0
        if labeled.any():
            self._observe_recent({a: c[labeled] for a, c in codes.items()}, n_groups, bins[labeled], label[labeled])
        for attribute, c in codes.items():
            self._add(attribute, c, bins, prediction, n_groups[attribute], ALL)
            if labeled.any():
                self._add_labels(attribute, c[labeled], bins[labeled], prediction[labeled], score[labeled],
                                 label[labeled], n_groups[attribute])

    def _observe_recent(self, codes: dict[str, np.ndarray], n_groups: dict[str, int], bins: np.ndarray,
                        label: np.ndarray) -> None:
        """New labels (in arrival order) into the current recent block, starting a
        new block when it is full; of a batch longer than a block, its last block's worth."""
        if label.size > self.recent_labels:
            self.recent, self._recent_count = [{}, {}], 0
            keep = slice(label.size - self.recent_labels, None)
            codes, bins, label = {a: c[keep] for a, c in codes.items()}, bins[keep], label[keep]
        elif self._recent_count >= self.recent_labels:
            self.recent, self._recent_count = [self.recent[1], {}], 0
        self._recent_count += label.size
        for attribute, c in codes.items():
            self._add_recent(attribute, c, bins, label, n_groups[attribute])

    def _add_recent(self, attribute, codes, bins, label, n_groups) -> None:
        keep = (codes >= 0) & (bins >= 0)
        n_bins = len(self.edges) + 1
        table = self.recent[1].get(attribute)
        if table is None or table.shape[0] < n_groups:
            grown = np.zeros((n_groups, n_bins, 2))
            if table is not None:
                grown[: table.shape[0]] = table
            table = self.recent[1][attribute] = grown
        flat = codes[keep] * n_bins + bins[keep]
        size = table.shape[0] * n_bins
        table[..., 0] += np.bincount(flat, minlength=size)[:size].reshape(table.shape[:2])
        table[..., 1] += np.bincount(flat, weights=label[keep].astype(float), minlength=size)[:size].reshape(
            table.shape[:2])

    def _add_labels(self, attribute, codes, bins, prediction, score, label, n_groups) -> None:
        self._add(attribute, codes, bins, prediction, n_groups, LABELED)
        self._add(attribute, codes, bins, prediction, n_groups, POSITIVE, weights=label.astype(float))
        self._add(attribute, codes, bins, prediction, n_groups, SCORE_SUM, weights=np.nan_to_num(score))

    def observe_labels(self, codes: dict[str, np.ndarray], n_groups: dict[str, int], prediction: np.ndarray,
                       score: np.ndarray, label: np.ndarray, delay_seconds: np.ndarray) -> None:
        """Labels that arrived after their prediction, with their delays."""
        for attribute, c in codes.items():
            keep = c >= 0
            delay = self.delay.get(attribute)
            if delay is None or delay.shape[0] < n_groups[attribute]:
                grown = np.zeros((n_groups[attribute], 2))
                if delay is not None:
                    grown[: delay.shape[0]] = delay
                delay = self.delay[attribute] = grown
            size = delay.shape[0]
            delay[:, 0] += np.bincount(c[keep], weights=delay_seconds[keep], minlength=size)[:size]
            delay[:, 1] += np.bincount(c[keep], minlength=size)[:size]
        if self.edges is None:
            return
        bins = self._bins(score)
        self._observe_recent(codes, n_groups, bins, label)
        for attribute, c in codes.items():
            self._add_labels(attribute, c, bins, prediction, score, label, n_groups[attribute])

    # -- reading -------------------------------------------------------------------
    def estimates(self, attribute: str, n_groups: int) -> list[dict | None]:
        """Per group: estimated rates over its unlabeled predictions, with 95% intervals."""
        if self.edges is None or attribute not in self.tables:
            return [None] * n_groups
        table = self._table(attribute, n_groups)
        rng = np.random.default_rng(self._seed)
        out: list[dict | None] = []
        for g in range(n_groups):
            t = table[g]  # (bins, 2, 4)
            labeled = t[..., LABELED].sum()
            unlabeled = t[..., ALL] - t[..., LABELED]  # (bins, prediction)
            if labeled < self.min_labeled or unlabeled.sum() < 1:
                out.append(None)
                continue
            a, b = self._calibrated(t)
            q = a / (a + b)
            point = _rates(unlabeled, q[None, :])
            draws = rng.beta(a, b, size=(BOOTSTRAP_DRAWS, q.size))
            # Realised outcomes of the unlabeled predictions under each draw.
            y1 = rng.binomial(unlabeled[None, :, 1].astype(np.int64), draws)  # predicted 1, truly 1
            y0 = rng.binomial(unlabeled[None, :, 0].astype(np.int64), draws)  # predicted 0, truly 1
            boot = _rates_from_counts(y1.sum(1), unlabeled[:, 1].sum() - y1.sum(1), y0.sum(1),
                                      unlabeled[:, 0].sum() - y0.sum(1))
            entry = {"n_unlabeled": int(unlabeled.sum())}
            for metric in ESTIMATED:
                value = point[metric][0]
                entry[metric] = None if np.isnan(value) else float(value)
            entry["ci"] = {
                metric: [float(v) for v in np.nanquantile(boot[metric], [0.025, 0.975])]
                for metric in ESTIMATED
                if entry[metric] is not None and not np.all(np.isnan(boot[metric]))
            }
            out.append(entry)
        return out

    def _calibrated(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per bin (a, b) of the Beta posterior of P(y = 1) from a group's table (bins, 2, 4)."""
        labeled = t[..., LABELED].sum()
        base = t[..., POSITIVE].sum() / labeled
        positives = t[..., POSITIVE].sum(axis=1)
        trials = t[..., LABELED].sum(axis=1)
        # Shrunk towards the base rate, plus Jeffreys' half counts so that a
        # group whose labels are all 0 or all 1 still gets a proper posterior.
        return positives + SHRINKAGE * base + 0.5, trials - positives + SHRINKAGE * (1 - base) + 0.5

    def reliability(self, attribute: str, n_groups: int) -> list[dict | None]:
        """Per group: do its recent labels agree with the calibration the estimates use?

        ``z``: (recent positives - expected) / sd under the since-start calibration;
        ``reliable``: |z| <= drift_z. None: too few labels to say (under ``min_labeled``
        since start or recently)."""
        out: list[dict | None] = [None] * n_groups
        if self.edges is None or attribute not in self.tables:
            return out
        table = self._table(attribute, n_groups)
        recent = np.zeros((n_groups, table.shape[1], 2))
        for block in self.recent:
            r = block.get(attribute)
            if r is not None:
                k = min(n_groups, r.shape[0])
                recent[:k] += r[:k]
        for g in range(n_groups):
            trials = recent[g, :, 0]
            if table[g][..., LABELED].sum() < self.min_labeled or trials.sum() < self.min_labeled:
                continue
            a, b = self._calibrated(table[g])
            q = a / (a + b)
            expected = float((trials * q).sum())
            sd = float(np.sqrt((trials * q * (1 - q)).sum()))
            observed = float(recent[g, :, 1].sum())
            z = (observed - expected) / sd if sd > 0 else 0.0
            out[g] = {"reliable": bool(abs(z) <= self.drift_z), "z": z, "recent_labels": int(trials.sum()),
                      "recent_positive_rate": observed / trials.sum(), "expected_positive_rate": expected / trials.sum()}
        return out

    def calibration_error(self, attribute: str, n_groups: int) -> np.ndarray:
        """Expected calibration error per group over its labeled predictions (NaN: not [0, 1] scores)."""
        out = np.full(n_groups, np.nan)
        if self.edges is None or not self.unit_scores or attribute not in self.tables:
            return out
        t = self._table(attribute, n_groups).sum(axis=2)  # (groups, bins, cells)
        labeled = t[..., LABELED]
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.abs(t[..., SCORE_SUM] / labeled - t[..., POSITIVE] / labeled)
            ece = np.nansum(np.where(labeled > 0, gap * labeled, 0), axis=1) / labeled.sum(axis=1)
        return np.where(labeled.sum(axis=1) >= self.min_labeled, ece, np.nan)

    def label_delay(self, attribute: str, n_groups: int) -> np.ndarray:
        out = np.full(n_groups, np.nan)
        delay = self.delay.get(attribute)
        if delay is not None:
            k = min(n_groups, delay.shape[0])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:k] = np.where(delay[:k, 1] > 0, delay[:k, 0] / delay[:k, 1], np.nan)
        return out


def _rates_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """The ``ESTIMATED`` rates of (expected) confusion counts, as ``monitor.rates`` defines them."""
    tp, fp, fn, tn = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (tp, fp, fn, tn)))
    cells = np.zeros(tp.shape + (N_CELLS,))
    cells[..., TP], cells[..., FP], cells[..., FN], cells[..., TN] = tp, fp, fn, tn
    return {metric: safe_ratio(*proportion(cells, metric)) for metric in ESTIMATED}


def _rates(unlabeled: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    """Expected-confusion rates: ``unlabeled`` (bins, prediction), ``q`` P(y=1) per bin."""
    tp = (unlabeled[:, 1] * q).sum(axis=-1)
    fp = (unlabeled[:, 1] * (1 - q)).sum(axis=-1)
    fn = (unlabeled[:, 0] * q).sum(axis=-1)
    tn = (unlabeled[:, 0] * (1 - q)).sum(axis=-1)
    return _rates_from_counts(np.atleast_1d(tp), np.atleast_1d(fp), np.atleast_1d(fn), np.atleast_1d(tn))
