"""Plain numpy containers for what the counterfactual scorer returns (no torch here)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = ["AttributeDetail", "CounterfactualBatchResult"]


@dataclass
class AttributeDetail:
    """Every variant scored for one attribute in a batch, one entry per variant.

    ``text_index`` points into the batch; ``delta`` is variant score minus the
    original score. The swaps of variant ``i`` are
    ``swap_source/swap_target[swap_offsets[i]:swap_offsets[i+1]]``, as codes
    into ``terms``; ``swaps[i]`` decodes them to (term swapped out, term
    swapped in) pairs on first use, so a batch that nobody inspects never
    builds a Python tuple per variant.
    """

    attribute: str
    text_index: np.ndarray  # int64, per variant
    variant_score: np.ndarray  # float32, per variant
    delta: np.ndarray  # float32, per variant
    swap_offsets: np.ndarray  # int64, per variant + 1
    swap_source: np.ndarray  # int16 term codes, per swap
    swap_target: np.ndarray  # int16 term codes, per swap
    terms: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.text_index.shape[0])

    @cached_property
    def swaps(self) -> list[tuple[tuple[str, str], ...]]:
        terms = self.terms
        pairs = [(terms[a], terms[b]) for a, b in zip(self.swap_source.tolist(), self.swap_target.tolist())]
        bounds = self.swap_offsets.tolist()
        return [tuple(pairs[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]


@dataclass
class CounterfactualBatchResult:
    """Scores of a batch of texts and of their counterfactual variants.

    Arrays are aligned with the input texts. ``flipped[i]`` is True when some
    variant of text ``i`` lands on the other side of the decision threshold;
    ``max_abs_change[i]`` is 0 and ``n_variants[i]`` 0 for a text with no group
    term. Rows that could not be scored (not a string, empty) have NaN scores
    and are listed in ``rejected`` with a reason.
    """

    original_score: np.ndarray
    debiased_score: np.ndarray
    flipped: np.ndarray
    max_abs_change: np.ndarray
    n_variants: np.ndarray
    threshold: float
    attributes: dict[str, AttributeDetail] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.original_score.shape[0])

    @property
    def n_sequences(self) -> int:
        """Sequences the model ran on: originals plus variants."""
        return int(len(self) - len(self.rejected) + self.n_variants.sum())

    def decision(self) -> np.ndarray:
        return self.original_score >= self.threshold
