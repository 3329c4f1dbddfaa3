"""Counterfactual averaging and per-group thresholds."""
from __future__ import annotations

import numpy as np
import pytest

from fairwatch.monitor.scorer.debias import GroupThresholdPostprocessor, counterfactual_average, group_rates


def test_counterfactual_average_matches_loop() -> None:
    rng = np.random.default_rng(1)
    orig = rng.random(20)
    idx = rng.integers(0, 20, 50)
    var = rng.random(50)
    got = counterfactual_average(orig, var, idx)
    want = [np.mean([orig[i], *var[idx == i]]) for i in range(20)]
    np.testing.assert_allclose(got, want)


def _biased_window(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["a", "b"], dtype=object), n)
    label = rng.integers(0, 2, n)
    # group b's scores are shifted up: more false positives at one threshold
    score = np.clip(0.35 * label + rng.normal(0.3, 0.15, n) + 0.2 * (group == "b"), 0, 1)
    return score, label, group


def test_group_thresholds_line_up_tpr_and_fpr() -> None:
    score, label, group = _biased_window()
    before = [group_rates(score[group == g] >= 0.5, label[group == g]) for g in ("a", "b")]
    post = GroupThresholdPostprocessor(base_threshold=0.5).fit(score, label, group)
    decided = post.predict(score, group)
    after = [group_rates(decided[group == g], label[group == g]) for g in ("a", "b")]
    gap = lambda r: max(abs(r[0][0] - r[1][0]), abs(r[0][1] - r[1][1]))  # noqa: E731
    assert gap(before) > 0.2
    assert gap(after) < 0.05
    assert post.thresholds_["b"] > post.thresholds_["a"]


def test_small_and_unseen_groups_keep_base_threshold() -> None:
    score, label, group = _biased_window()
    group = group.copy()
    group[:5] = "tiny"
    post = GroupThresholdPostprocessor(base_threshold=0.5, min_group_size=30).fit(score, label, group)
    assert post.threshold_for("tiny") == 0.5 and post.threshold_for("never-seen") == 0.5
    assert post.predict([0.49, 0.51], ["never-seen", "never-seen"]).tolist() == [False, True]


def test_round_trip_dict() -> None:
    score, label, group = _biased_window()
    post = GroupThresholdPostprocessor().fit(score, label, group)
    again = GroupThresholdPostprocessor.from_dict(post.to_dict())
    assert (again.predict(score, group) == post.predict(score, group)).all()


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        GroupThresholdPostprocessor().fit([0.1, 0.2], [0], ["a", "b"])
