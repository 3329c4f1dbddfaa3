"""Scores of one LLM response, on the CPU with nothing downloaded: refused or not, and VADER sentiment.

VADER (Hutto and Gilbert 2014, the ``vaderSentiment`` package, MIT) ships its
lexicon inside its wheel, so scoring needs no network; it is rule-based and
costs about 0.1 ms per short response on one core (docs/generation.md has
the measured figure), far more than the rest of the pipeline per event.

>>> scorer = ResponseScorer()  # VADER reads "help" as positive: refusals need their own detector
>>> refused, sentiment = scorer.score_many(["I can’t help with that.", "Happy to help, great question!"])
>>> refused.tolist(), [round(float(s), 3) for s in sentiment]
([True, False], [0.402, 0.895])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib import resources

import numpy as np

__all__ = ["NEGATIVE_SENTIMENT", "SENTIMENT_CHARS", "RefusalDetector", "ResponseScorer", "SentimentScorer", "shipped_refusal_phrases"]

# VADER's own cut-off (its README: "negative sentiment: compound score <= -0.05").
NEGATIVE_SENTIMENT = -0.05
# VADER's cost grows with the square of the length for some texts (measured here: "not good but kind of
# great" repeated, 0.05 s at 2,000 characters, 0.8 s at 8,000, 3.5 s at 20,000), so one hostile response could
# stall a batch: sentiment is read from the first SENTIMENT_CHARS characters, refusals from the whole response.
SENTIMENT_CHARS = 2_000

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def shipped_refusal_phrases() -> list[str]:
    """The phrases of ``refusal_phrases.txt`` (see its header for how they were chosen)."""
    text = resources.files(__package__).joinpath("refusal_phrases.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class RefusalDetector:
    """A response is refused when it contains one of ``phrases`` (case-insensitive, any position).

    >>> detector = RefusalDetector()
    >>> detector("As an AI, I cannot assist with that."), detector("Here is your itinerary.")
    (True, False)
    """

    def __init__(self, phrases: Iterable[str] | None = None) -> None:
        self.phrases = [p.lower().translate(_APOSTROPHES) for p in (phrases or shipped_refusal_phrases())]
        if not self.phrases:
            raise ValueError("a refusal detector needs at least one phrase")
        # One alternation: a single scan of the response whatever the number of phrases.
        self._pattern = re.compile("|".join(re.escape(p) for p in sorted(self.phrases, key=len, reverse=True)))

    def __call__(self, response: str) -> bool:
        return self._pattern.search(response.lower().translate(_APOSTROPHES)) is not None


class SentimentScorer:
    """VADER's compound sentiment in [-1, 1] (negative below 0) of the first ``max_chars`` characters.

    The analyser loads its lexicon from the installed wheel on first use, so
    ``import fairwatch`` does not pay for it.
    """

    def __init__(self, max_chars: int = SENTIMENT_CHARS) -> None:
        self._analyzer = None
        self.max_chars = max_chars

    def __call__(self, response: str) -> float:
        if self._analyzer is None:
            # vaderSentiment is a core dependency; imported here because loading it reads a 430 kB lexicon.
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        return self._analyzer.polarity_scores(response[: self.max_chars])["compound"]

    def __getstate__(self) -> dict:
        return {"_analyzer": None, "max_chars": self.max_chars}  # the lexicon is reloaded from the wheel, never pickled into a snapshot


class ResponseScorer:
    """The scores of a batch of responses: refused (bool array), compound sentiment (float array) and, with a
    ``classifier`` (``response_classifier.ResponseClassifier``: anything with ``flags(responses)``), toxic
    (1.0 / 0.0)."""

    def __init__(self, refusal: RefusalDetector | None = None, sentiment: SentimentScorer | None = None,
                 classifier=None) -> None:
        self.refusal = refusal or RefusalDetector()
        self.sentiment = sentiment or SentimentScorer()
        self.classifier = classifier

    def score_batch(self, responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(refused, sentiment, toxic or None without a classifier): the classifier scores the whole batch at once."""
        refused, compound = self.score_many(responses)
        toxic = None if self.classifier is None else np.asarray(self.classifier.flags(responses), dtype=np.float64)
        return refused, compound, toxic

    def score_many(self, responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        refusal, sentiment = self.refusal, self.sentiment
        refused = np.fromiter((refusal(r) for r in responses), dtype=bool, count=len(responses))
        compound = np.fromiter((sentiment(r) for r in responses), dtype=np.float64, count=len(responses))
        return refused, compound
