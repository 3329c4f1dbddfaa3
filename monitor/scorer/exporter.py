"""Prometheus exposition of the counterfactual statistics, read at scrape time.

Like :mod:`monitor.exporter`, a custom collector builds the families when
Prometheus scrapes, so scoring never touches prometheus-client. Register it
on the pipeline's registry::

    registry = monitor.exporter.make_registry(pipeline)
    registry.register(CounterfactualCollector(step.stats, step.throughput, step.lock))
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import nullcontext

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fairwatch.monitor.scorer import metric_names as names
from fairwatch.monitor.scorer.stats import SCORER_SECONDS_BUCKETS, CounterfactualStats, ScorerThroughput

__all__ = ["CounterfactualCollector"]


class CounterfactualCollector(Collector):
    """Flip rates, score changes and top-term changes per (model, attribute), plus scorer throughput.

    ``lock``: held while reading, the one the scoring thread holds while
    updating (the scrape runs on the HTTP server's thread).
    """

    def __init__(
        self,
        stats: CounterfactualStats,
        throughput: ScorerThroughput | None = None,
        lock: threading.Lock | None = None,
        top_terms: int = names.TOP_TERMS,
    ) -> None:
        self.stats = stats
        self.throughput = throughput
        self.lock = lock
        self.top_terms = top_terms

    def collect(self) -> Iterator:
        key_labels = [names.MODEL, names.ATTRIBUTE]
        texts = CounterMetricFamily(names.COUNTERFACTUAL_TEXTS, "Texts with a counterfactual variant", labels=key_labels)
        flipped = CounterMetricFamily(
            names.COUNTERFACTUAL_FLIPPED, "Texts whose decision flips on some variant", labels=key_labels
        )
        variants = CounterMetricFamily(names.COUNTERFACTUAL_VARIANTS, "Counterfactual variants scored", labels=key_labels)
        flip_rate = GaugeMetricFamily(
            names.COUNTERFACTUAL_FLIP_RATE, "Share of texts whose decision flips on some variant", labels=key_labels
        )
        change = GaugeMetricFamily(
            names.COUNTERFACTUAL_SCORE_CHANGE, "Absolute score change from swapping group terms (mean, max)",
            labels=[*key_labels, names.STAT],
        )
        term_change = GaugeMetricFamily(
            names.COUNTERFACTUAL_TERM_SCORE_CHANGE, "Mean absolute score change when a term is swapped (top terms)",
            labels=[*key_labels, names.TERM],
        )
        with self.lock or nullcontext():
            for model, attribute in self.stats.keys():
                s = self.stats.get(model, attribute)
                key = [model, attribute]
                texts.add_metric(key, s.n_texts)
                flipped.add_metric(key, s.n_flipped)
                variants.add_metric(key, s.n_variants)
                if s.n_texts:
                    flip_rate.add_metric(key, s.flip_rate())
                if s.n_variants:
                    change.add_metric([*key, "mean"], s.mean_abs_change())
                    change.add_metric([*key, "max"], s.max_abs_change)
                for row in s.terms.top(self.top_terms):
                    if not math.isnan(row.mean_abs):
                        term_change.add_metric([*key, row.term], row.mean_abs)
            throughput = self.throughput
            if throughput is not None:
                scorer_texts = CounterMetricFamily(names.SCORER_TEXTS, "Texts scored")
                scorer_texts.add_metric([], throughput.texts)
                sequences = CounterMetricFamily(names.SCORER_SEQUENCES, "Sequences (texts and variants) scored")
                sequences.add_metric([], throughput.sequences)
                histogram = HistogramMetricFamily(names.SCORER_BATCH_SECONDS, "Seconds to score one batch of texts")
                cumulative, buckets = 0, []
                for bound, count in zip(SCORER_SECONDS_BUCKETS, throughput.bucket_counts):
                    cumulative += count
                    buckets.append(("+Inf" if math.isinf(bound) else str(bound), cumulative))
                histogram.add_metric([], buckets, throughput.seconds_sum)
        yield from (texts, flipped, variants, flip_rate, change, term_change)
        if throughput is not None:
            yield from (scorer_texts, sequences, histogram)
