"""Prometheus names of the counterfactual scorer's series, defined once.

Kept beside the scorer (not in ``monitor.metric_names``) so the scorer stays
an optional part; label names are shared with the core's module. Terms are
lexicon entries (a bounded set the operator configures), exported for the
top-K terms only; no input text ever becomes a label.
"""

from __future__ import annotations

from fairwatch.monitor.metric_names import ATTRIBUTE, MODEL

__all__ = [
    "MODEL", "ATTRIBUTE", "TERM", "STAT", "SCORE_CHANGE_STATS",
    "COUNTERFACTUAL_TEXTS", "COUNTERFACTUAL_FLIPPED", "COUNTERFACTUAL_VARIANTS",
    "COUNTERFACTUAL_FLIP_RATE", "COUNTERFACTUAL_SCORE_CHANGE", "COUNTERFACTUAL_TERM_SCORE_CHANGE",
    "SCORER_TEXTS", "SCORER_SEQUENCES", "SCORER_BATCH_SECONDS", "TOP_TERMS",
]

# --- label names -------------------------------------------------------------
TERM = "term"
STAT = "stat"
SCORE_CHANGE_STATS = ("mean", "max")  # mean |Δscore| over variants, largest |Δscore|

# --- mergeable counters per (model, attribute): sum over workers in PromQL ------
# A merged flip rate is sum(flipped) / sum(texts).
COUNTERFACTUAL_TEXTS = "fairwatch_counterfactual_texts_total"  # texts with a variant for the attribute
COUNTERFACTUAL_FLIPPED = "fairwatch_counterfactual_flipped_total"  # of which the decision flips on some variant
COUNTERFACTUAL_VARIANTS = "fairwatch_counterfactual_variants_total"

# --- gauges: what this worker sees since start -------------------------------
COUNTERFACTUAL_FLIP_RATE = "fairwatch_counterfactual_flip_rate"  # {model, attribute}
COUNTERFACTUAL_SCORE_CHANGE = "fairwatch_counterfactual_score_change"  # {model, attribute, stat}
COUNTERFACTUAL_TERM_SCORE_CHANGE = "fairwatch_counterfactual_term_score_change"  # {model, attribute, term}
TOP_TERMS = 10  # terms exported per (model, attribute)

# --- scorer health -------------------------------------------------------------
SCORER_TEXTS = "fairwatch_scorer_texts_total"
SCORER_SEQUENCES = "fairwatch_scorer_sequences_total"  # texts + variants run through the model
SCORER_BATCH_SECONDS = "fairwatch_scorer_batch_seconds"


# (names, type, labels, meaning), for the metric reference, docs/metrics.md (fairwatch.metric_reference).
REFERENCE: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (('fairwatch_counterfactual_texts_total', 'fairwatch_counterfactual_flipped_total', 'fairwatch_counterfactual_variants_total'), 'counter', 'model, attribute',
     'scorer: texts with a variant, of which flipped, variants scored (sum over workers)'),
    (('fairwatch_counterfactual_flip_rate',), 'gauge', 'model, attribute',
     'share of texts whose decision flips on some variant'),
    (('fairwatch_counterfactual_score_change',), 'gauge', 'model, attribute, stat (`mean`, `max`)',
     'absolute score change over variants'),
    (('fairwatch_counterfactual_term_score_change',), 'gauge', 'model, attribute, term',
     'the 10 terms that move the score most'),
    (('fairwatch_scorer_texts_total', 'fairwatch_scorer_sequences_total'), 'counter', '',
     'texts and sequences (texts + variants) scored'),
    (('fairwatch_scorer_batch_seconds',), 'histogram', '',
     'time per scoring batch'),
)
