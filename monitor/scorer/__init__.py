"""The GPU scorer: counterfactual re-scoring and debiased outputs for text models.

torch and transformers are imported lazily (inside :mod:`monitor.scorer.model`
and :mod:`monitor.scorer.batching`) so that ``import monitor`` and the
lexicon, statistics and debiasing code work without them.
"""
from __future__ import annotations

from typing import Any

from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon, LexiconError, Variant
from fairwatch.monitor.scorer.debias import GroupThresholdPostprocessor, counterfactual_average
from fairwatch.monitor.scorer.stats import CounterfactualStats, TermAttribution

__all__ = [
    "CounterfactualBatchResult",
    "CounterfactualGenerator",
    "CounterfactualScorer",
    "CounterfactualStats",
    "GroupThresholdPostprocessor",
    "Lexicon",
    "LexiconError",
    "TermAttribution",
    "Variant",
    "counterfactual_average",
]


def __getattr__(name: str) -> Any:
    # The scorer pulls in torch; only import it when asked for.
    if name in ("CounterfactualScorer", "CounterfactualBatchResult"):
        from fairwatch.monitor.scorer import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'fairwatch.monitor.scorer' has no attribute {name!r}")
