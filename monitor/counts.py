"""Per-group count cells and their batch contributions.

The state of every group is a row of additive cells; rates, gaps and
intervals are pure functions of these rows (``monitor.rates``). Counts are
additive, so the rows of two workers (or two halves of a stream) sum to the
row of the whole: that is what makes the exported counters mergeable.
"""

from __future__ import annotations

import numpy as np

# Column indices of a count row.
N, POS, SCORED, SCORE_SUM, SCORE_SQ, TP, FP, TN, FN = range(9)
N_CELLS = 9
CELL_NAMES = ("predictions", "positives", "scored", "score_sum", "score_sq", "tp", "fp", "tn", "fn")
NO_LABEL = -1


def confusion_index(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Column offset from TP for each (prediction, label): TP, FP, TN, FN."""
    return 2 * (1 - prediction) + (label != prediction)


def contributions(
    codes: np.ndarray,
    prediction: np.ndarray,
    label: np.ndarray,
    score: np.ndarray,
    n_groups: int,
    *,
    with_predictions: bool = True,
) -> np.ndarray:
    """The (n_groups, N_CELLS) count rows that a set of events adds.

    ``codes`` are group codes (negative: not counted for this attribute),
    ``label`` is NO_LABEL where unknown, ``score`` NaN where absent. With
    ``with_predictions=False`` only the label cells are filled (a late label).

    >>> rows = contributions(np.array([0, 0, 1]), np.array([1, 0, 1]),
    ...                      np.array([1, -1, 0]), np.array([0.9, 0.2, np.nan]), 2)
    >>> rows[:, [N, POS, TP, FP]].tolist()
    [[2.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]]
    """
    out = np.zeros((n_groups, N_CELLS))
    counted = codes >= 0
    if not counted.all():
        codes, prediction, label, score = codes[counted], prediction[counted], label[counted], score[counted]
    if codes.size == 0:
        return out
    if with_predictions:
        out[:, N] = np.bincount(codes, minlength=n_groups)
        out[:, POS] = np.bincount(codes, weights=prediction, minlength=n_groups)
        has_score = ~np.isnan(score)
        if has_score.any():
            c, s = codes[has_score], score[has_score]
            out[:, SCORED] = np.bincount(c, minlength=n_groups)
            out[:, SCORE_SUM] = np.bincount(c, weights=s, minlength=n_groups)
            out[:, SCORE_SQ] = np.bincount(c, weights=s * s, minlength=n_groups)
    labeled = label >= 0
    if labeled.any():
        cell = codes[labeled] * 4 + confusion_index(prediction[labeled], label[labeled])
        out[:, TP : TP + 4] = np.bincount(cell, minlength=n_groups * 4).reshape(n_groups, 4)
    return out


def padded(rows: np.ndarray, n_groups: int) -> np.ndarray:
    """``rows`` grown with zero rows to ``n_groups`` (groups seen later)."""
    if rows.shape[0] >= n_groups:
        return rows
    grown = np.zeros((n_groups, N_CELLS))
    grown[: rows.shape[0]] = rows
    return grown
