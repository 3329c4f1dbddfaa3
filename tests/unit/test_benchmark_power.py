"""The power benchmark's references: the anytime-valid oracle and how a detection is attributed."""

import numpy as np

from benchmarks import power


def _stream(gap: float, n: int = 60_000, seed: int = 0):
    """Codes of A (group 0: the target, 1: the lowest), predictions and labels, all after the change."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2, n)
    label = (rng.random(n) < 0.4).astype(np.int64)
    rate = np.where(codes == 0, 0.5 + gap / 2, 0.5 - gap / 2)
    prediction = (rng.random(n) < rate).astype(np.int64)
    return codes, prediction, label


def test_the_anytime_valid_oracle_sees_a_large_breach_and_never_one_inside_the_threshold():
    codes, prediction, label = _stream(0.3)
    delay = power.anytime_oracle_delay(codes, prediction, label, 0, 1, shift_at=0)
    assert np.isfinite(delay) and delay < 20_000
    # At a look: one less than a multiple of the look interval.
    assert (delay + 1) % power.CHECK_EVERY == 0
    codes, prediction, label = _stream(0.08)
    assert power.anytime_oracle_delay(codes, prediction, label, 0, 1, shift_at=0) == np.inf


def test_the_anytime_valid_oracle_is_slower_than_the_fixed_sample_one_at_the_same_level():
    """Validity at every look costs width: on the same stream the fixed-sample oracle, looked
    at as often, is never later (its per-look error is what makes it optimistic)."""
    codes, prediction, label = _stream(0.16, n=200_000, seed=3)
    streams = {"A": codes}
    _, fixed, anytime = power.oracle_delays(streams, prediction, label, 0, 1, shift_at=0)
    assert np.isfinite(anytime)
    assert fixed < anytime


def test_a_detection_is_attributed_to_the_search_only_when_a_cell_breached_first():
    found = [(10, "A"), (50, "A&B"), (900, "B")]
    assert power.first_is_search(found, shift_at=0) is False  # A's pair came first
    assert power.first_is_search(found, shift_at=20)  # A's pair at 10 was before the change
    assert power.first_is_search([(60, "A&B"), (70, "A")], shift_at=0)
    assert not power.first_is_search([(60, "B")], shift_at=0)
