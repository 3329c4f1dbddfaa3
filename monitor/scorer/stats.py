"""Streaming counterfactual statistics per (model, attribute), River-style.

Each object has ``update(...)`` and read methods, and merges with ``+`` so that
several workers (or batches) add up to the same figures as one pass.

>>> a = AttributeCounterfactualStats()
>>> a.update_text(flipped=True, max_abs_change=0.4, abs_changes=[0.4, 0.1])
>>> a.update_text(flipped=False, max_abs_change=0.0, abs_changes=[0.0])
>>> a.flip_rate(), round(a.mean_abs_change(), 3), a.max_abs_change
(0.5, 0.167, 0.4)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from fairwatch.monitor.scorer.results import CounterfactualBatchResult

__all__ = [
    "TermAttribution", "AttributeCounterfactualStats", "CounterfactualStats", "TermRow", "ScorerThroughput",
    "SCORER_SECONDS_BUCKETS",
]


@dataclass
class _Moments:
    count: int = 0
    sum_abs: float = 0.0
    sum_signed: float = 0.0
    max_abs: float = 0.0

    def add(self, signed: float) -> None:
        self.count += 1
        self.sum_abs += abs(signed)
        self.sum_signed += signed
        self.max_abs = max(self.max_abs, abs(signed))

    def __add__(self, other: _Moments) -> _Moments:
        return _Moments(
            self.count + other.count,
            self.sum_abs + other.sum_abs,
            self.sum_signed + other.sum_signed,
            max(self.max_abs, other.max_abs),
        )


@dataclass(frozen=True)
class TermRow:
    """One line of the attribution table: how much swapping ``term`` moved the score."""

    term: str
    count_out: int  # variants where the term was swapped out of the text
    mean_abs_out: float  # mean |score change| when swapped out
    mean_signed_out: float  # mean (variant - original) when swapped out: >0 means removing it raises the score
    count_in: int  # variants where the term was swapped in
    mean_abs_in: float
    mean_signed_in: float

    @property
    def mean_abs(self) -> float:
        n = self.count_out + self.count_in
        return (self.mean_abs_out * self.count_out + self.mean_abs_in * self.count_in) / n if n else 0.0


class TermAttribution:
    """Which terms move the score most: |Δscore| per term swapped out and swapped in.

    >>> t = TermAttribution()
    >>> t.update("gay", "straight", -0.6); t.update("gay", "lesbian", -0.1)
    >>> t.update("christian", "gay", 0.5)
    >>> [(r.term, r.count_out, round(r.mean_abs_out, 2), r.count_in) for r in t.rows() if r.term == "gay"]
    [('gay', 2, 0.35, 1)]
    >>> t.top(1)[0].term  # swapping "straight" in moved the score most
    'straight'
    """

    def __init__(self) -> None:
        self._out: dict[str, _Moments] = defaultdict(_Moments)
        self._in: dict[str, _Moments] = defaultdict(_Moments)

    def update(self, source: str, target: str, delta: float) -> None:
        """Record a variant that swapped ``source`` for ``target`` and changed the score by ``delta``."""
        self._out[source].add(float(delta))
        # Seen from the swapped-in term the change has the same sign: it raised/lowered the score.
        self._in[target].add(float(delta))

    def rows(self) -> list[TermRow]:
        out = []
        for term in sorted(set(self._out) | set(self._in)):
            o = self._out.get(term, _Moments())
            i = self._in.get(term, _Moments())
            out.append(
                TermRow(
                    term,
                    o.count,
                    o.sum_abs / o.count if o.count else 0.0,
                    o.sum_signed / o.count if o.count else 0.0,
                    i.count,
                    i.sum_abs / i.count if i.count else 0.0,
                    i.sum_signed / i.count if i.count else 0.0,
                )
            )
        return out

    def top(self, k: int = 10) -> list[TermRow]:
        """The ``k`` terms whose swaps move the score most (mean |Δ| in and out)."""
        return sorted(self.rows(), key=lambda r: (-r.mean_abs, r.term))[:k]

    def __add__(self, other: TermAttribution) -> TermAttribution:
        out = TermAttribution()
        for src, dst in ((self, out), (other, out)):
            for k, v in src._out.items():
                dst._out[k] = dst._out[k] + v
            for k, v in src._in.items():
                dst._in[k] = dst._in[k] + v
        return out


class AttributeCounterfactualStats:
    """Flip rate, mean and max |Δscore| and term attribution for one (model, attribute)."""

    def __init__(self) -> None:
        self.n_texts = 0  # texts with at least one variant for this attribute
        self.n_flipped = 0
        self.n_variants = 0
        self.sum_abs_change = 0.0  # over variants
        self.sum_max_abs_change = 0.0  # over texts
        self.max_abs_change = 0.0
        self.terms = TermAttribution()

    def update_text(
        self,
        flipped: bool,
        max_abs_change: float,
        abs_changes: Iterable[float],
        swaps: Iterable[tuple[tuple[str, str], ...]] = (),
        deltas: Iterable[float] = (),
    ) -> None:
        """Record one text: its flip, its largest change, and each variant's change and swaps."""
        self.n_texts += 1
        self.n_flipped += int(bool(flipped))
        changes = [float(c) for c in abs_changes]
        self.n_variants += len(changes)
        self.sum_abs_change += sum(changes)
        self.sum_max_abs_change += float(max_abs_change)
        self.max_abs_change = max(self.max_abs_change, float(max_abs_change))
        for sw, d in zip(swaps, deltas):
            for source, target in set(sw):
                self.terms.update(source, target, d)

    def flip_rate(self) -> float:
        """Share of texts whose decision changes on some variant (NaN before any text)."""
        return self.n_flipped / self.n_texts if self.n_texts else float("nan")

    def mean_abs_change(self) -> float:
        """Mean |Δscore| over all variants."""
        return self.sum_abs_change / self.n_variants if self.n_variants else float("nan")

    def mean_max_abs_change(self) -> float:
        """Mean over texts of the largest |Δscore| among the text's variants."""
        return self.sum_max_abs_change / self.n_texts if self.n_texts else float("nan")

    def __add__(self, other: AttributeCounterfactualStats) -> AttributeCounterfactualStats:
        out = AttributeCounterfactualStats()
        out.n_texts = self.n_texts + other.n_texts
        out.n_flipped = self.n_flipped + other.n_flipped
        out.n_variants = self.n_variants + other.n_variants
        out.sum_abs_change = self.sum_abs_change + other.sum_abs_change
        out.sum_max_abs_change = self.sum_max_abs_change + other.sum_max_abs_change
        out.max_abs_change = max(self.max_abs_change, other.max_abs_change)
        out.terms = self.terms + other.terms
        return out


class CounterfactualStats:
    """All counterfactual statistics, keyed by (model, attribute).

    ``update(result, model=...)`` takes a :class:`CounterfactualBatchResult`.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], AttributeCounterfactualStats] = {}

    def update(self, result: CounterfactualBatchResult, model: str = "default") -> None:
        threshold = result.threshold
        base_decision = result.original_score >= threshold
        for attribute, detail in result.attributes.items():
            if len(detail) == 0:
                continue
            stats = self._by_key.setdefault((model, attribute), AttributeCounterfactualStats())
            order = np.argsort(detail.text_index, kind="stable")
            idx = detail.text_index[order]
            bounds = np.flatnonzero(np.diff(idx)) + 1
            for group in np.split(order, bounds):
                i = int(detail.text_index[group[0]])
                deltas = detail.delta[group]
                flipped = bool(np.any((detail.variant_score[group] >= threshold) != base_decision[i]))
                abs_d = np.abs(deltas)
                stats.update_text(
                    flipped,
                    float(abs_d.max()),
                    abs_d.tolist(),
                    [detail.swaps[j] for j in group],
                    deltas.tolist(),
                )

    def get(self, model: str, attribute: str) -> AttributeCounterfactualStats:
        return self._by_key.get((model, attribute), AttributeCounterfactualStats())

    def keys(self) -> list[tuple[str, str]]:
        return sorted(self._by_key)

    def flip_rate(self, model: str, attribute: str) -> float:
        return self.get(model, attribute).flip_rate()

    def summary(self) -> list[dict[str, object]]:
        """One row per (model, attribute), the top terms included: what an on-call engineer reads."""
        rows = []
        for (model, attribute), s in sorted(self._by_key.items()):
            rows.append(
                {
                    "model": model,
                    "attribute": attribute,
                    "texts": s.n_texts,
                    "variants": s.n_variants,
                    "flip_rate": s.flip_rate(),
                    "mean_abs_change": s.mean_abs_change(),
                    "max_abs_change": s.max_abs_change,
                    "top_terms": [
                        {
                            "term": r.term,
                            "mean_abs_change": r.mean_abs,
                            "swapped_out": r.count_out,
                            "mean_change_when_swapped_out": r.mean_signed_out,
                            "swapped_in": r.count_in,
                            "mean_change_when_swapped_in": r.mean_signed_in,
                        }
                        for r in s.terms.top(5)
                    ],
                }
            )
        return rows

    def __add__(self, other: CounterfactualStats) -> CounterfactualStats:
        out = CounterfactualStats()
        for key in set(self._by_key) | set(other._by_key):
            a = self._by_key.get(key, AttributeCounterfactualStats())
            b = other._by_key.get(key, AttributeCounterfactualStats())
            out._by_key[key] = a + b
        return out


# Upper bounds (seconds) of the scorer's batch-duration histogram: a batch is
# up to a few thousand texts, i.e. tens of thousands of sequences.
SCORER_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class ScorerThroughput:
    """How much the scorer ran: texts, sequences (texts + variants), batch durations.

    >>> t = ScorerThroughput()
    >>> t.update(texts=3, sequences=12, seconds=0.02); t.update(texts=1, sequences=1, seconds=3.0)
    >>> t.sequences, t.batches, t.bucket_counts[:4], t.bucket_counts[-3:]
    (13, 2, [0, 0, 1, 0], [1, 0, 0])
    """

    def __init__(self) -> None:
        self.texts = 0
        self.sequences = 0
        self.batches = 0
        self.seconds_sum = 0.0
        self.bucket_counts = [0] * len(SCORER_SECONDS_BUCKETS)  # per bucket, not cumulative

    def update(self, texts: int, sequences: int, seconds: float) -> None:
        self.texts += int(texts)
        self.sequences += int(sequences)
        self.batches += 1
        self.seconds_sum += float(seconds)
        for i, bound in enumerate(SCORER_SECONDS_BUCKETS):
            if seconds <= bound:
                self.bucket_counts[i] += 1
                break
