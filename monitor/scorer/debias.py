"""Debiased outputs: counterfactual-averaged scores and per-group thresholds (pure numpy).

fairlearn's ``ThresholdOptimizer`` does the randomized version of the
equalized-odds post-processing (Hardt et al. 2016); we keep a deterministic,
numpy-only variant so that the core does not need sklearn/fairlearn at run time
and so that a decision is reproducible for an incident report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from fairwatch.monitor.counts import contributions
from fairwatch.monitor.rates import proportion, safe_ratio

__all__ = ["counterfactual_average", "GroupThresholdPostprocessor", "group_rates"]


def counterfactual_average(original: np.ndarray, variant_score: np.ndarray, text_index: np.ndarray) -> np.ndarray:
    """Mean of each text's score over the text and all its counterfactual variants.

    A text with no variant keeps its score (NaN stays NaN).

    >>> counterfactual_average(np.array([0.9, 0.2]), np.array([0.1, 0.5]), np.array([0, 0]))
    array([0.5, 0.2])
    """
    original = np.asarray(original, dtype=np.float64)
    total = np.nan_to_num(original).copy()
    count = np.ones_like(original)
    np.add.at(total, np.asarray(text_index, dtype=np.int64), np.asarray(variant_score, dtype=np.float64))
    np.add.at(count, np.asarray(text_index, dtype=np.int64), 1.0)
    out = total / count
    out[np.isnan(original)] = np.nan
    return out


def group_rates(decision: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """(TPR, FPR) of boolean decisions against 0/1 labels (NaN where undefined)."""
    decision = np.asarray(decision, dtype=bool).astype(np.int64)
    label = np.asarray(label).astype(bool).astype(np.int64)
    rows = contributions(np.zeros(label.size, dtype=np.int64), decision, label, np.full(label.size, np.nan), 1)
    return float(safe_ratio(*proportion(rows, "tpr"))[0]), float(safe_ratio(*proportion(rows, "fpr"))[0])


def _roc_points(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (decision = score >= t) with their TPR and FPR, for one group."""
    cand = np.unique(score)
    cand = np.concatenate([cand, [np.inf]])  # inf: nobody positive
    pos = np.sort(score[label])
    neg = np.sort(score[~label])
    tpr = (pos.size - np.searchsorted(pos, cand, side="left")) / max(pos.size, 1)
    fpr = (neg.size - np.searchsorted(neg, cand, side="left")) / max(neg.size, 1)
    return cand, tpr, fpr


@dataclass
class GroupThresholdPostprocessor:
    """Per-group decision thresholds so that group TPR and FPR line up (equalized-odds style).

    ``fit`` computes the pooled operating point (TPR, FPR) at ``base_threshold``
    on a labeled window, then gives each group the threshold whose own (TPR,
    FPR) is nearest to it (largest of the two gaps, ties to the smaller
    overall error). Groups with fewer than ``min_group_size`` rows, or without
    both labels, and groups never seen keep ``base_threshold``. The caller refits
    on its schedule (e.g. each closed labeled window).

    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(["a", "b"], 500); y = rng.integers(0, 2, 1000)
    >>> s = np.clip(0.5 * y + rng.normal(0.25, 0.15, 1000) + 0.2 * (g == "b"), 0, 1)
    >>> post = GroupThresholdPostprocessor().fit(s, y, g)
    >>> post.thresholds_["b"] > post.thresholds_["a"]
    True
    """

    base_threshold: float = 0.5
    min_group_size: int = 30
    thresholds_: dict[Hashable, float] = field(default_factory=dict)
    target_: tuple[float, float] | None = None

    def fit(self, score: Sequence[float], label: Sequence[int], group: Sequence[Hashable]) -> GroupThresholdPostprocessor:
        score = np.asarray(score, dtype=np.float64)
        label = np.asarray(label).astype(bool)
        group = np.asarray(group, dtype=object)
        if not (score.shape == label.shape == group.shape):
            raise ValueError("score, label and group must have the same length")
        keep = ~np.isnan(score)
        score, label, group = score[keep], label[keep], group[keep]
        target_tpr, target_fpr = group_rates(score >= self.base_threshold, label)
        self.target_ = (target_tpr, target_fpr)
        self.thresholds_ = {}
        if np.isnan(target_tpr) or np.isnan(target_fpr):
            return self  # the window lacks a class: nothing to equalize
        for g in np.unique(group):
            m = group == g
            if m.sum() < self.min_group_size or label[m].all() or not label[m].any():
                continue
            cand, tpr, fpr = _roc_points(score[m], label[m])
            gap = np.maximum(np.abs(tpr - target_tpr), np.abs(fpr - target_fpr))
            # Among the closest points prefer the one nearest the base threshold: least surprise.
            best = np.flatnonzero(np.isclose(gap, gap.min()))
            choice = best[np.argmin(np.abs(np.where(np.isinf(cand[best]), 2.0, cand[best]) - self.base_threshold))]
            self.thresholds_[g] = float(cand[choice])
        return self

    def threshold_for(self, group: Hashable) -> float:
        return self.thresholds_.get(group, self.base_threshold)

    def predict(self, score: Sequence[float], group: Sequence[Hashable]) -> np.ndarray:
        """Boolean decisions, each row against its group's threshold."""
        score = np.asarray(score, dtype=np.float64)
        group = np.asarray(group, dtype=object)
        thr = np.fromiter((self.threshold_for(g) for g in group), dtype=np.float64, count=group.shape[0])
        return score >= thr

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_threshold": self.base_threshold,
            "min_group_size": self.min_group_size,
            "thresholds": {str(k): v for k, v in self.thresholds_.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupThresholdPostprocessor:
        return cls(float(data["base_threshold"]), int(data["min_group_size"]), dict(data["thresholds"]))
