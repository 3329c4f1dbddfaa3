"""The counterfactual scorer as a pipeline stage: debiased and post-processed outputs as derived models.

For a batch of parsed events, :class:`ScorerStep` (a :class:`~monitor.stages.Stage`,
handed to ``Pipeline(config, stages=[...])``) scores the text of each new
prediction with a :class:`~monitor.scorer.scoring.CounterfactualScorer` and
derives two outputs per prediction, tracked as models of their own and
labeled with their source's outcome:

* ``<model>:debiased``: the counterfactual-averaged score (mean over the text
  and its group-swapped variants) and its decision at the scorer threshold;
* ``<model>:postprocessed``: the primary score against per-group thresholds
  (:class:`~monitor.scorer.debias.GroupThresholdPostprocessor`), refitted every
  ``refit_every`` labels on the labeled entries the primary model's journal
  holds, for one configured attribute.

So the fairness gaps of the deployed model and of both remedies sit side by
side in the same report and on the same dashboards.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from fairwatch.monitor.events import Event, Rejection
from fairwatch.monitor.group_metrics import UNKNOWN_GROUP
from fairwatch.monitor.scorer.debias import GroupThresholdPostprocessor
from fairwatch.monitor.scorer.exporter import CounterfactualCollector
from fairwatch.monitor.scorer.stats import CounterfactualStats, ScorerThroughput
from fairwatch.monitor.stages import Stage, derived_event, fresh_predictions

__all__ = ["ScorerStep", "DEBIASED_SUFFIX", "POSTPROCESSED_SUFFIX"]

DEBIASED_SUFFIX = ":debiased"
POSTPROCESSED_SUFFIX = ":postprocessed"


class ScorerStep(Stage):
    """Score texts, derive debiased / post-processed predictions, keep counterfactual stats.

    ``scorer``: a CounterfactualScorer (anything with ``score(texts)`` and
    ``threshold``). ``postprocess_attribute``: the group attribute whose
    thresholds are equalized (None: no post-processed output).
    ``refit_every``: labels (since start, for that attribute) between refits.
    ``min_group_size``: groups with fewer labeled rows keep the base threshold.
    """

    def __init__(
        self,
        scorer: Any,
        *,
        postprocess_attribute: str | None = None,
        refit_every: int = 1000,
        min_group_size: int = 30,
        stats: CounterfactualStats | None = None,
    ) -> None:
        if refit_every < 1:
            raise ValueError("refit_every must be at least 1")
        self.scorer = scorer
        self.threshold = float(scorer.threshold)
        self.postprocess_attribute = postprocess_attribute
        self.refit_every = refit_every
        self.min_group_size = min_group_size
        self.stats = stats if stats is not None else CounterfactualStats()
        self.throughput = ScorerThroughput()
        # Held while stats change; the /metrics thread reads under it too.
        self.lock = threading.Lock()
        self.postprocessors: dict[str, GroupThresholdPostprocessor] = {}
        self._labeled_at_fit: dict[str, int] = {}

    # -- the stage ---------------------------------------------------------------
    def derive(self, events: list[Event | Rejection], pipeline: Any = None) -> dict[int, list[Event]]:
        """The debiased and post-processed predictions of this batch's new predictions, by batch position.

        Predictions the pipeline already holds, or that repeat within the
        batch, are skipped: the pipeline drops them as duplicates, and scoring
        them would count their texts twice in the statistics.
        """
        fresh = fresh_predictions(events, pipeline)
        derived: dict[int, list[Event]] = {}
        scorer_score: dict[int, float] = {}  # position -> scorer's score of the text as written
        by_model: dict[str, list[int]] = {}
        for i in fresh:
            text = events[i].text
            if isinstance(text, str) and text.strip():
                by_model.setdefault(events[i].model, []).append(i)
        for model, positions in by_model.items():
            started = time.perf_counter()
            result = self.scorer.score([events[i].text for i in positions])
            seconds = time.perf_counter() - started
            with self.lock:
                self.stats.update(result, model=model)
                self.throughput.update(len(positions) - len(result.rejected), result.n_sequences, seconds)
            debiased = result.debiased_score.tolist()
            original = result.original_score.tolist()
            suffix_model = model + DEBIASED_SUFFIX
            for k, i in enumerate(positions):
                score = debiased[k]
                if math.isnan(score):  # the scorer refused the text (reason in result.rejected)
                    continue
                scorer_score[i] = original[k]
                derived[i] = [derived_event(events[i], suffix_model, int(score >= self.threshold), score)]
        if self.postprocess_attribute is not None and self.postprocessors:
            self._postprocess(events, fresh, scorer_score, derived)
        return derived

    def _postprocess(
        self, events: list[Any], fresh: list[int], scorer_score: dict[int, float], derived: dict[int, list[Event]]
    ) -> None:
        attribute = self.postprocess_attribute
        by_model: dict[str, list[tuple[int, float, str]]] = {}
        for i in fresh:
            event = events[i]
            post = self.postprocessors.get(event.model)
            if post is None:
                continue
            # The deployed model's score, as its journal holds it (what the
            # thresholds were fitted on); the scorer's re-score when absent.
            score = event.score if event.score is not None else scorer_score.get(i)
            if score is None or math.isnan(score):
                continue
            group = (event.groups or {}).get(attribute, UNKNOWN_GROUP)
            by_model.setdefault(event.model, []).append((i, float(score), group))
        for model, rows in by_model.items():
            decisions = self.postprocessors[model].predict([r[1] for r in rows], [r[2] for r in rows]).tolist()
            name = model + POSTPROCESSED_SUFFIX
            for (i, score, _), decision in zip(rows, decisions):
                derived.setdefault(i, []).append(derived_event(events[i], name, int(decision), score))

    def after_batch(self, pipeline: Any) -> None:
        """Refit the post-processors when due."""
        if self.postprocess_attribute is not None:
            self.refit(pipeline)

    def close(self) -> None:
        """Stop the scorer's worker processes, if any."""
        self.scorer.close()

    # -- post-processor refits ---------------------------------------------------
    def refit(self, pipeline: Any) -> list[str]:
        """Refit the post-processor of each primary model with ``refit_every`` new labels; the models refitted."""
        attribute = self.postprocess_attribute
        if attribute is None:
            return []
        due: list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]] = []
        with pipeline.lock:
            for model in pipeline.primary_models():
                monitor = pipeline.monitor(model)
                labeled = monitor.labels_counted(attribute)
                if labeled is None or labeled - self._labeled_at_fit.get(model, 0) < self.refit_every:
                    continue
                due.append((model, labeled, *monitor.labeled_predictions(attribute)))
        refitted = []
        for model, labeled, score, label, group in due:  # fit outside the pipeline lock
            post = GroupThresholdPostprocessor(self.threshold, self.min_group_size).fit(score, label, group)
            self.postprocessors[model] = post
            self._labeled_at_fit[model] = labeled
            refitted.append(model)
        return refitted

    # -- reading -----------------------------------------------------------------
    def collector(self) -> CounterfactualCollector:
        """A Prometheus collector over this step's statistics (register it on the /metrics registry)."""
        return CounterfactualCollector(self.stats, self.throughput, self.lock)

    def report(self, top_terms: int = 5) -> dict[str, Any]:
        """The ``counterfactual`` section of the replay report: per model, per attribute."""
        out: dict[str, Any] = {"threshold": self.threshold, "models": {}}
        with self.lock:
            for (model, attribute), entry in self._summaries(top_terms):
                out["models"].setdefault(model, {})[attribute] = entry
            out["texts"] = self.throughput.texts
            out["sequences"] = self.throughput.sequences
            out["scoring_seconds"] = self.throughput.seconds_sum
        if self.postprocess_attribute is not None:
            out["postprocessing"] = {
                "attribute": self.postprocess_attribute,
                "thresholds": {m: p.to_dict()["thresholds"] for m, p in sorted(self.postprocessors.items())},
                "fitted_on_labels": dict(self._labeled_at_fit),
            }
        return out

    def _summaries(self, top_terms: int) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        rows = []
        for model, attribute in self.stats.keys():
            s = self.stats.get(model, attribute)
            rows.append(((model, attribute), {
                "texts": s.n_texts,
                "variants": s.n_variants,
                "flip_rate": _num(s.flip_rate()),
                "flipped": s.n_flipped,
                "mean_abs_change": _num(s.mean_abs_change()),
                "mean_max_abs_change": _num(s.mean_max_abs_change()),
                "max_abs_change": _num(s.max_abs_change),
                "top_terms": [
                    {"term": r.term, "mean_abs_change": r.mean_abs, "swapped_out": r.count_out,
                     "mean_change_when_swapped_out": r.mean_signed_out, "swapped_in": r.count_in,
                     "mean_change_when_swapped_in": r.mean_signed_in}
                    for r in s.terms.top(top_terms)
                ],
            }))
        return rows


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
