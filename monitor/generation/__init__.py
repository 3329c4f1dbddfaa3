"""Fairness of LLM generations: each response scored on the CPU (refusal, VADER sentiment), and per-group
refusal rate, negative share, mean sentiment and sentiment-distribution distance over the monitor's windows."""

from __future__ import annotations

from fairwatch.monitor.generation.generation_metrics import GenerationMetrics
from fairwatch.monitor.generation.mean_sentiment import MeanSentiment
from fairwatch.monitor.generation.negative_share import NegativeShare
from fairwatch.monitor.generation.refusal_rate import RefusalRate
from fairwatch.monitor.generation.response_scores import NEGATIVE_SENTIMENT, RefusalDetector, ResponseScorer
from fairwatch.monitor.generation.sentiment_distance import BIN_ERROR_BOUND, SentimentHistogram, wasserstein_1

__all__ = [
    "BIN_ERROR_BOUND",
    "GenerationMetrics",
    "MeanSentiment",
    "NEGATIVE_SENTIMENT",
    "NegativeShare",
    "RefusalDetector",
    "RefusalRate",
    "ResponseScorer",
    "SentimentHistogram",
    "wasserstein_1",
]
