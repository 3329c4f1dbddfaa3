"""Per-group statistics of generated responses against values computed by hand or by scipy, windows against a
recount of their members, merges against the whole stream, and the response scorer against its data files."""

from __future__ import annotations

import math
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from fairwatch.monitor.generation import (
    BIN_ERROR_BOUND,
    GenerationMetrics,
    MeanSentiment,
    NegativeShare,
    RefusalDetector,
    RefusalRate,
    ResponseScorer,
    SentimentHistogram,
)
from fairwatch.monitor.generation.generation_gaps import generation_gaps
from fairwatch.monitor.generation.generation_metrics import AttributeStatistics
from fairwatch.monitor.generation.sentiment_distance import max_pair_distance


def _stream(n: int, seed: int = 0):
    """A stream of three groups whose sentiment distributions differ (group 2 the most negative)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, n)
    sentiment = np.clip(rng.normal(0.3 - 0.35 * codes, 0.4), -1, 1)
    refused = rng.random(n) < 0.05 + 0.1 * codes
    ts = np.sort(rng.uniform(0, 1000, n))
    return codes, refused, sentiment, ts


def test_refusal_rate_and_negative_share_by_hand():
    codes = np.array([0, 0, 0, 0, 1, 1])
    rate = RefusalRate().update(codes, np.array([True, True, False, False, False, True]))
    value, lower, upper = rate.get()
    assert value.tolist() == [0.5, 0.5]
    # Wilson 95% for 2 of 4, by hand: (0.5 + z²/8) / (1 + z²/4) ± z·sqrt(1/16 + z²/64) / (1 + z²/4)
    z = 1.959963984540054
    centre, half = (0.5 + z * z / 8) / (1 + z * z / 4), z * math.sqrt(1 / 16 + z * z / 64) / (1 + z * z / 4)
    assert lower[0] == pytest.approx(centre - half) and upper[0] == pytest.approx(centre + half)
    share = NegativeShare().update(codes, np.array([-0.05, -0.049, -1.0, 0.3, 0.0, -0.2]))
    assert share.get()[0].tolist() == [0.5, 0.5]  # -0.05 is negative (VADER's cut-off), -0.049 is not


def test_mean_sentiment_matches_numpy():
    codes, _, sentiment, _ = _stream(500)
    mean, lower, upper = MeanSentiment().update(codes, sentiment).get()
    for g in range(3):
        values = sentiment[codes == g]
        assert mean[g] == pytest.approx(values.mean())
        half = 1.959963984540054 * values.std(ddof=1) / math.sqrt(values.size)
        assert (lower[g], upper[g]) == (pytest.approx(values.mean() - half), pytest.approx(values.mean() + half))


def test_wasserstein_from_histograms_is_within_the_bin_bound_of_scipy():
    codes, _, sentiment, _ = _stream(3000)
    histogram = SentimentHistogram().update(codes, sentiment)
    to_rest = histogram.get()
    for g in range(3):
        exact = wasserstein_distance(sentiment[codes == g], sentiment[codes != g])
        assert abs(to_rest[g] - exact) <= BIN_ERROR_BOUND
    gap = max_pair_distance(histogram.table, np.arange(3))
    pairs = {(a, b): wasserstein_distance(sentiment[codes == a], sentiment[codes == b])
             for a in range(3) for b in range(a + 1, 3)}
    assert abs(gap.value - max(pairs.values())) <= BIN_ERROR_BOUND
    assert {gap.high, gap.low} == set(max(pairs, key=pairs.get)) and gap.high == 0  # group 0: the higher mean
    assert gap.lower <= gap.value <= gap.upper


def test_identical_distributions_are_at_distance_zero_with_an_interval_that_holds_it():
    sentiment = np.linspace(-1, 1, 400)
    histogram = SentimentHistogram().update(np.repeat([0, 1], 200), np.concatenate([sentiment[::2], sentiment[1::2]]))
    gap = max_pair_distance(histogram.table, np.arange(2))
    assert gap.value < BIN_ERROR_BOUND and gap.lower == 0.0


def test_gaps_are_max_minus_min_over_the_groups_given():
    codes, refused, sentiment, _ = _stream(2000)
    stats = AttributeStatistics()
    stats.update(codes, refused, sentiment)
    gaps = generation_gaps(stats, np.arange(3))
    rates = [refused[codes == g].mean() for g in range(3)]
    assert gaps["refusal_rate_difference"].value == pytest.approx(max(rates) - min(rates))
    negative = [(sentiment[codes == g] <= -0.05).mean() for g in range(3)]
    assert gaps["negative_share_difference"].value == pytest.approx(max(negative) - min(negative))
    means = [sentiment[codes == g].mean() for g in range(3)]
    assert gaps["mean_sentiment_difference"].value == pytest.approx(max(means) - min(means))
    only_two = generation_gaps(stats, np.array([0, 1]))
    assert only_two["refusal_rate_difference"].value == pytest.approx(abs(rates[0] - rates[1]))
    assert math.isnan(generation_gaps(stats, np.array([1]))["refusal_rate_difference"].value)


def _recount(codes, refused, sentiment) -> AttributeStatistics:
    stats = AttributeStatistics()
    stats.update(codes, refused, sentiment)
    return stats


def _same(a: AttributeStatistics, b: AttributeStatistics, n_groups: int = 3) -> bool:
    return all(np.allclose(getattr(a, s).rows(n_groups), getattr(b, s).rows(n_groups), atol=1e-9)
               for s in ("refusal", "negative", "sentiment", "histogram"))


@pytest.mark.parametrize("batch", [1, 7, 250])
def test_sliding_windows_equal_a_recount_of_their_members(batch):
    codes, refused, sentiment, ts = _stream(1500)
    ts = ts + np.random.default_rng(1).uniform(-80, 0, ts.size)  # out of order, some by more than the 50 s window
    metrics = GenerationMetrics(count_windows=[100], time_windows_seconds=[50.0])
    watermark = -math.inf
    entered = np.zeros(ts.size, dtype=bool)  # inside the time window on arrival (the cut-off only moves forward)
    for start in range(0, ts.size, batch):
        part = slice(start, start + batch)
        metrics.add({"sex": codes[part]}, refused[part], sentiment[part], ts[part])
        watermark = max(watermark, ts[part].max())
        entered[part] = ts[part] > watermark - 50.0
    everything, last_100, last_50s = metrics.windows
    assert _same(everything.statistics["sex"], _recount(codes, refused, sentiment))
    assert _same(last_100.statistics["sex"], _recount(codes[-100:], refused[-100:], sentiment[-100:]))
    members = entered & (ts > watermark - 50.0)
    assert members.sum() > 0 and not entered.all()  # some events were too late to enter at all
    assert _same(last_50s.statistics["sex"], _recount(codes[members], refused[members], sentiment[members]))


def test_held_events_are_bounded_by_the_capacity():
    codes, refused, sentiment, ts = _stream(1000)
    metrics = GenerationMetrics(count_windows=[500], capacity=300)
    metrics.add({"sex": codes}, refused, sentiment, ts)
    last = metrics.windows[1].statistics["sex"]
    assert _same(last, _recount(codes[-300:], refused[-300:], sentiment[-300:]))
    assert metrics.truncated_events == 200


def test_merge_of_two_workers_equals_the_whole_stream():
    codes, refused, sentiment, _ = _stream(800)
    first, second = _recount(codes[:300], refused[:300], sentiment[:300]), _recount(codes[300:], refused[300:],
                                                                                    sentiment[300:])
    assert _same(first.merge(second), _recount(codes, refused, sentiment))


def test_refusal_phrases_ship_with_the_package_and_are_documented():
    text = resources.files("fairwatch.monitor.generation").joinpath("refusal_phrases.txt").read_text()
    assert "How they were chosen" in text
    detector = RefusalDetector()
    assert detector("I\u2019m sorry, but I can\u2019t share that.")  # curly apostrophes, any case
    assert detector("AS AN AI language model I have no opinion")
    assert not detector("Sorry for the delay: here is the itinerary you asked for.")
    assert not RefusalDetector(["nope"])("I cannot assist")  # a custom list replaces the shipped one


def test_vader_scores_from_the_wheel_with_the_network_closed():
    """The lexicon is inside the installed package, and scoring opens no socket (run where any would fail)."""
    import vaderSentiment

    assert (resources.files(vaderSentiment) / "vader_lexicon.txt").is_file()
    program = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket = refuse; socket.create_connection = refuse\n"
        "from fairwatch.monitor.generation import ResponseScorer\n"
        "refused, sentiment = ResponseScorer().score_many(['I hate this awful answer', 'I cannot assist'])\n"
        "print(refused.tolist(), sentiment[0] < -0.5)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[False, True] True"
    assert ResponseScorer().score_many([])[0].size == 0


def test_sentiment_reads_a_bounded_prefix_and_refusals_the_whole_response():
    from fairwatch.monitor.generation.response_scores import SENTIMENT_CHARS

    # VADER's cost grows with the square of this text's length: only its prefix is scored.
    long = "not good but kind of great " * 740 + " As an AI I cannot assist."
    refused, sentiment = ResponseScorer().score_many([long])
    assert refused[0]  # the refusal at the very end is found
    assert sentiment[0] == ResponseScorer().score_many([long[:SENTIMENT_CHARS]])[1][0]


def test_a_response_whose_scoring_raises_costs_only_its_own_event():
    from fairwatch.monitor.generation.response_scores import SentimentScorer
    from fairwatch.monitor.pipeline import Pipeline

    class UserScorerWithABug(SentimentScorer):  # e.g. a user's own scorer that fails on some input
        def __call__(self, response: str) -> float:
            if "boom" in response:
                raise ValueError("cannot score this")
            return super().__call__(response)

    pipeline = Pipeline()
    pipeline.response_scorer = ResponseScorer(sentiment=UserScorerWithABug())
    result = pipeline.process_lines([
        b'{"event_id": "1", "groups": {"sex": "F"}, "response": "fine, thanks"}',
        b'{"event_id": "2", "groups": {"sex": "F"}, "response": "boom"}',
        b'{"event_id": "3", "groups": {"sex": "M"}, "response": "I cannot assist"}'])
    assert [(i, r.reason, r.message) for i, r in result.rejected] == [(1, "internal_error", "ValueError: cannot score this")]
    assert pipeline.stats.valid == 2
    assert pipeline.generations["default"].since_start.statistics["sex"].responses().tolist() == [1.0, 1.0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=25),
    lateness=st.floats(0, 30),
    seed=st.integers(0, 2**16),
)
def test_streaming_in_any_batches_equals_a_recount(sizes, lateness, seed):
    """Property: whatever the batch cuts and lateness, since-start, count and time windows hold exactly the
    sums of their members (the count window: the last 30; the time window: arrived inside and still inside)."""
    n = sum(sizes)
    codes, refused, sentiment, _ = _stream(n, seed)
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.float64) - rng.uniform(0, lateness, n)
    metrics = GenerationMetrics(count_windows=[30], time_windows_seconds=[20.0], capacity=10_000)
    start, watermark = 0, -math.inf
    entered = np.zeros(n, dtype=bool)
    for size in sizes:
        part = slice(start, start + size)
        metrics.add({"a": codes[part]}, refused[part], sentiment[part], ts[part])
        watermark = max(watermark, ts[part].max())
        entered[part] = ts[part] > watermark - 20.0
        start += size
    everything, last_30, last_20s = (w.statistics["a"] for w in metrics.windows)
    assert _same(everything, _recount(codes, refused, sentiment))
    assert _same(last_30, _recount(codes[-30:], refused[-30:], sentiment[-30:]))
    members = entered & (ts > watermark - 20.0)
    assert _same(last_20s, _recount(codes[members], refused[members], sentiment[members]))
