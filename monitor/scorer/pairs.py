"""Score changes on given counterfactual pairs (e.g. Jigsaw's fuzzed/non-fuzzed test sets), per term."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
from fairwatch.monitor.scorer.stats import TermAttribution

__all__ = ["PairReport", "paired_score_changes"]


@dataclass
class PairReport:
    """What changed between row-aligned originals and counterparts."""

    n_pairs: int
    n_changed: int  # pairs whose text differs
    n_attributed: int  # changed pairs where lexicon terms explain the change
    delta: np.ndarray  # counterpart score - original score, per pair (0 where unchanged)
    terms: TermAttribution = field(default_factory=TermAttribution)

    def table(self, k: int = 20) -> list[dict[str, object]]:
        return [
            {"term": r.term, "mean_abs_change": r.mean_abs, "swapped_out": r.count_out,
             "mean_change_when_swapped_out": r.mean_signed_out, "swapped_in": r.count_in,
             "mean_change_when_swapped_in": r.mean_signed_in}
            for r in self.terms.top(k)
        ]


def paired_score_changes(
    score_texts: Callable[[Sequence[str]], np.ndarray],
    originals: Sequence[str],
    counterparts: Sequence[str],
    lexicon: Lexicon | None = None,
) -> PairReport:
    """Score both sides of each pair and attribute each change to the lexicon terms that differ.

    A term counts as swapped out when it occurs more often in the original than
    in the counterpart, swapped in when the reverse; every such (out, in)
    combination of a pair gets that pair's score change.
    """
    if len(originals) != len(counterparts):
        raise ValueError("originals and counterparts must be row-aligned (same length)")
    gen = CounterfactualGenerator(lexicon or Lexicon.default())
    changed = [i for i, (a, b) in enumerate(zip(originals, counterparts)) if a != b]
    delta = np.zeros(len(originals), dtype=np.float32)
    report = PairReport(len(originals), len(changed), 0, delta)
    if not changed:
        return report
    scores = score_texts([originals[i] for i in changed] + [counterparts[i] for i in changed])
    d = scores[len(changed) :] - scores[: len(changed)]
    delta[changed] = d
    for i, di in zip(changed, d.tolist()):
        before = _term_counts(gen, originals[i])
        after = _term_counts(gen, counterparts[i])
        out_terms = sorted((before - after).keys())
        in_terms = sorted((after - before).keys())
        if not out_terms and not in_terms:
            continue
        report.n_attributed += 1
        for src in out_terms or ["<none>"]:
            for dst in in_terms or ["<none>"]:
                report.terms.update(src, dst, di)
    return report


def _term_counts(gen: CounterfactualGenerator, text: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for found in gen.matches(text).values():
        c.update(term for _, _, term in found)
    return c
