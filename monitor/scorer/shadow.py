"""Shadow evaluation: a candidate model scores the live texts beside production, changing nothing.

:class:`ShadowStep` (a :class:`~monitor.stages.Stage`) re-scores the text of each new prediction of one
production model with a candidate classifier (a Hugging Face model
directory, such as the fine-tune job's ``candidate/``) and adds two derived
models to the batch, so that every group rate, gap and anytime-valid
decision is computed for both, on exactly the same events:

* ``<model>:candidate``: the candidate's score of the text and its decision
  at ``threshold``;
* ``<model>:baseline``: production's own prediction and score of those same
  events. ``<model>`` itself counts every event since the worker's state
  began, including events without text and those before the candidate was
  attached; the baseline starts with the candidate, so that the two compare
  like for like.

Both take their source's label, early or late. Events without ``text`` cannot
be shadowed (the candidate has nothing to read): they count for ``<model>``
only, and :meth:`ShadowStep.report` says how many were skipped.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from fairwatch.monitor.events import Event, Rejection
from fairwatch.monitor.stages import Stage, derived_event, fresh_predictions

__all__ = ["ShadowStep", "ShadowCounts", "CANDIDATE_SUFFIX", "BASELINE_SUFFIX", "shadow_models"]

CANDIDATE_SUFFIX = ":candidate"
BASELINE_SUFFIX = ":baseline"


def shadow_models(model: str) -> tuple[str, str]:
    """The (baseline, candidate) model names under which ``model``'s shadow is tracked.

    >>> shadow_models("toxic")
    ('toxic:baseline', 'toxic:candidate')
    """
    return model + BASELINE_SUFFIX, model + CANDIDATE_SUFFIX


@dataclass
class ShadowCounts:
    """Predictions of the shadowed model seen by the step, by fate."""

    scored: int = 0  # the candidate scored the text: counted under both derived models
    without_text: int = 0  # no text to score: production only
    refused: int = 0  # the candidate's scorer refused the text (over-long...)


class ShadowStep(Stage):
    """Score the shadowed model's texts with a candidate; derive ``:candidate`` and ``:baseline`` predictions.

    ``candidate``: anything with ``score_texts(texts) -> scores`` (a
    :class:`~monitor.scorer.scoring.CounterfactualScorer` on the candidate's
    directory). ``model``: the production model it shadows; other models pass
    through untouched. With the counterfactual :class:`ScorerStep` too, the
    pipeline runs both stages (its outputs first).
    """

    def __init__(self, candidate: Any, model: str, *, threshold: float = 0.5, candidate_dir: str = "") -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.candidate = candidate
        self.model = model
        self.threshold = float(threshold)
        self.candidate_dir = candidate_dir
        self.baseline_model, self.candidate_model = shadow_models(model)
        self.counts = ShadowCounts()
        self.lock = threading.Lock()  # the /metrics thread may read the counts while a batch updates them

    def derive(self, events: list[Event | Rejection], pipeline: Any = None) -> dict[int, list[Event]]:
        """The ``:baseline`` and ``:candidate`` predictions of this batch's new predictions of the model, by position."""
        positions, texts = [], []
        without_text = 0
        for i in fresh_predictions(events, pipeline):
            event = events[i]
            if event.model != self.model:
                continue
            if isinstance(event.text, str) and event.text.strip():
                positions.append(i)
                texts.append(event.text)
            else:
                without_text += 1
        derived: dict[int, list[Event]] = {}
        refused = 0
        if texts:
            for i, score in zip(positions, self.candidate.score_texts(texts).tolist()):
                if math.isnan(score):
                    refused += 1
                    continue
                source = events[i]
                derived[i] = [
                    derived_event(source, self.baseline_model, source.prediction, source.score),
                    derived_event(source, self.candidate_model, int(score >= self.threshold), score),
                ]
        with self.lock:
            self.counts.scored += len(derived)
            self.counts.without_text += without_text
            self.counts.refused += refused
        return derived

    def report(self) -> dict[str, Any]:
        """The ``shadow`` section of the replay report."""
        with self.lock:
            counts = ShadowCounts(**vars(self.counts))
        return {"model": self.model, "candidate_dir": self.candidate_dir, "threshold": self.threshold,
                "baseline_model": self.baseline_model, "candidate_model": self.candidate_model,
                "scored": counts.scored, "without_text": counts.without_text, "refused": counts.refused}

    def close(self) -> None:
        self.candidate.close()
