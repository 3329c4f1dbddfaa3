"""Subgroup, BPSN and BNSP AUC per group (Borkan et al. 2019), streaming and mergeable.

For each (attribute, group) we keep two histograms of the model's scores over
fixed bins: one of the labeled positives, one of the labeled negatives. Bins
are the same on every worker and never move, so histograms add: the sum of
two workers' tables is the table of the whole stream, exactly. An AUC is read
from histograms by the Mann-Whitney count with everything in one bin counted
as a tie (half a win), so the only error is the ties the bins make:

* subgroup AUC: the group's positives against the group's negatives;
* BPSN (background positive, subgroup negative): positives of every other
  group against the group's negatives. Low: the model scores the group's
  negatives as high as others' positives (false positives for the group);
* BNSP (background negative, subgroup positive): the group's positives
  against every other group's negatives. Low: the group's positives score
  low (false negatives for the group).

That bin-tie error is at most ``sum_b pos_b * neg_b / (2 P N)``, reported as
``tie_error_bound``; with scores on a coarser grid than the bins (deciles 1..10)
it is 0 and the value is the exact tie-corrected AUC of scikit-learn's
``roc_auc_score``. Intervals: Hanley and McNeil (1982), the normal interval
from the AUC and the numbers of positives and negatives alone, which is all a
histogram keeps (a DeLong interval needs per-event placements; TFMA, which
computes these metrics in batch, offers a bootstrap instead).

Scikit-learn would compute the same AUC from raw scores, but it needs every
score at once; here the state per group is a few hundred counts.

>>> h = ScoreHistograms()
>>> h.update("g", np.array([0, 0, 1, 1]), np.array([0.9, 0.2, 0.8, 0.3]), np.array([1, 0, 1, 0]), 2)
>>> m = bias_aucs(h.table("g", 2))
>>> [round(float(v), 3) for v in m["subgroup_auc"].value], [round(float(v), 3) for v in m["bpsn_auc"].value]
([1.0, 1.0], [1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairwatch.monitor.metric_names import AUC_METRICS

__all__ = ["AucEstimate", "ScoreHistograms", "auc_from_histograms", "bias_aucs", "roc_auc", "score_bins",
           "N_SCORE_BINS"]

Z95 = 1.959963984540054

# Fixed bins, monotone in the score: 200 equal bins on [0, 1] (width 0.005, where probabilities live),
# and for scores outside it (logits, deciles, raw scores) 8 bins per doubling of the distance, 12
# doublings each way; beyond, the end bins. Same on every worker: that is what makes tables add.
UNIT_BINS = 200
BINS_PER_DOUBLING = 8
SIDE_BINS = 12 * BINS_PER_DOUBLING
N_SCORE_BINS = SIDE_BINS + UNIT_BINS + SIDE_BINS


def score_bins(score: np.ndarray) -> np.ndarray:
    """The bin of each score (a non-decreasing function of the score), -1 for NaN.

    >>> score_bins(np.array([0.0, 0.5, 1.0, 2.0, 10.0, -1.0, np.nan])).tolist()
    [96, 196, 295, 304, 322, 87, -1]
    """
    s = np.asarray(score, dtype=np.float64)
    out = np.full(s.shape, -1, dtype=np.int64)
    unit = (s >= 0) & (s <= 1)
    out[unit] = SIDE_BINS + np.minimum((s[unit] * UNIT_BINS).astype(np.int64), UNIT_BINS - 1)
    above = s > 1
    if above.any():
        steps = np.floor(np.log2(s[above]) * BINS_PER_DOUBLING).astype(np.int64)
        out[above] = SIDE_BINS + UNIT_BINS + np.minimum(steps, SIDE_BINS - 1)
    below = s < 0
    if below.any():
        steps = np.floor(np.log2(1.0 - s[below]) * BINS_PER_DOUBLING).astype(np.int64)
        out[below] = SIDE_BINS - 1 - np.minimum(steps, SIDE_BINS - 1)
    return out


class ScoreHistograms:
    """Per (attribute, group): counts of labeled scores per bin, negatives and positives apart.

    ``table(attribute, n_groups)`` is an array (n_groups, 2, N_SCORE_BINS):
    ``[:, 0]`` negatives, ``[:, 1]`` positives. ``a.merge(b)`` adds ``b``'s
    counts: workers' histograms sum to the whole stream's.
    """

    def __init__(self) -> None:
        self.tables: dict[str, np.ndarray] = {}

    def table(self, attribute: str, n_groups: int) -> np.ndarray:
        table = self.tables.get(attribute)
        if table is None or table.shape[0] < n_groups:
            grown = np.zeros((n_groups, 2, N_SCORE_BINS), dtype=np.int64)
            if table is not None:
                grown[: table.shape[0]] = table
            table = self.tables[attribute] = grown
        return table[:n_groups]

    def update(self, attribute: str, codes: np.ndarray, score: np.ndarray, label: np.ndarray, n_groups: int) -> None:
        """Count the events that have a group code, a score and a label (the rest are skipped)."""
        bins = score_bins(score)
        keep = (codes >= 0) & (bins >= 0) & (label >= 0)
        if not keep.any():
            return
        table = self.table(attribute, n_groups)
        flat = (codes[keep] * 2 + (label[keep] > 0)) * N_SCORE_BINS + bins[keep]
        table += np.bincount(flat, minlength=table.size)[: table.size].reshape(table.shape)

    def observe(self, codes: dict[str, np.ndarray], n_groups: dict[str, int], score: np.ndarray,
                label: np.ndarray) -> None:
        """A batch of events of one model, every attribute at once (what the pipeline calls)."""
        has = (label >= 0) & ~np.isnan(score)
        if not has.any():
            return
        score, label = score[has], label[has]
        for attribute, c in codes.items():
            self.update(attribute, c[has], score, label, n_groups[attribute])

    def merge(self, other: ScoreHistograms) -> ScoreHistograms:
        """Add ``other``'s counts into this one (returns self)."""
        for attribute, theirs in other.tables.items():
            mine = self.table(attribute, theirs.shape[0])
            mine += theirs
        return self


@dataclass(frozen=True)
class AucEstimate:
    """Per group: the AUC, its 95% Hanley-McNeil interval, the counts behind it and the bin-tie bound."""

    value: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    tie_error_bound: np.ndarray


def auc_from_histograms(positives: np.ndarray, negatives: np.ndarray) -> AucEstimate:
    """AUC of positive against negative scores, from histograms over the same bins (last axis).

    Ties (same bin) count half, as in the Mann-Whitney U and scikit-learn.
    NaN where either side is empty.

    >>> e = auc_from_histograms(np.array([[0, 1, 2]]), np.array([[2, 1, 0]]))
    >>> float(e.value[0]), float(e.tie_error_bound[0])
    (0.9444444444444444, 0.05555555555555555)
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    n_pos, n_neg = pos.sum(axis=-1), neg.sum(axis=-1)
    below = np.cumsum(neg, axis=-1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=-1)
    ties = (pos * neg).sum(axis=-1)
    pairs = n_pos * n_neg
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where(pairs > 0, wins / pairs, np.nan)
        bound = np.where(pairs > 0, ties / (2 * pairs), np.nan)
        lower, upper = hanley_mcneil_interval(auc, n_pos, n_neg)
    return AucEstimate(auc, lower, upper, n_pos, n_neg, bound)


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Exact area under the ROC curve of raw scores (Mann-Whitney, ties averaged); NaN with one class.

    The batch counterpart of :func:`auc_from_histograms`, for a finished window of scores.

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    label = np.asarray(label).astype(bool)
    pos, neg = int(label.sum()), int((~label).sum())
    if not pos or not neg:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based average rank of each distinct value
    ranks = avg_rank[inverse]
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def hanley_mcneil_interval(auc: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray, z: float = Z95):
    """Normal interval with the Hanley-McNeil (1982) standard error, clipped to [0, 1].

    >>> lo, hi = hanley_mcneil_interval(np.array([0.8]), np.array([50.0]), np.array([50.0]))
    >>> round(float(lo[0]), 3), round(float(hi[0]), 3)
    (0.713, 0.887)
    """
    a = np.asarray(auc, dtype=np.float64)
    q1 = a / (2 - a)
    q2 = 2 * a * a / (1 + a)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    se = np.sqrt(np.maximum(var, 0.0))
    return np.clip(a - z * se, 0.0, 1.0), np.clip(a + z * se, 0.0, 1.0)


def bias_aucs(table: np.ndarray, total: np.ndarray | None = None) -> dict[str, AucEstimate]:
    """Subgroup, BPSN and BNSP AUC of every row of ``table`` (rows, 2, bins).

    The background of a row is ``total`` (default: the sum of the rows, i.e.
    every group of the attribute, ``unknown`` and ``other`` included) less the
    row; pass the attribute's full total when ``table`` holds only some groups
    (or groups summed under one exported label).
    """
    table = np.asarray(table, dtype=np.float64)
    total = table.sum(axis=0) if total is None else np.asarray(total, dtype=np.float64)
    neg, pos = table[:, 0, :], table[:, 1, :]
    background_neg = total[0] - neg
    background_pos = total[1] - pos
    subgroup, bpsn, bnsp = AUC_METRICS
    return {
        subgroup: auc_from_histograms(pos, neg),
        bpsn: auc_from_histograms(background_pos, neg),
        bnsp: auc_from_histograms(pos, background_neg),
    }
