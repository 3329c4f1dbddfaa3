"""A seeded synthetic prediction stream with delayed labels and an optional bias shift.

Used by ``fairwatch demo``, the benchmarks and the tests. The model's score
is a noisy, calibrated view of each person's true risk; from ``shift_at``
on, the scores of one group are pushed up by ``shift_logit`` without any
change in its true risk, which raises its selection rate and false positive
rate: the kind of harm fairwatch must catch.

>>> stream = SyntheticStream(n_events=5, label_delay_events=2, seed=1)
>>> lines = [line for batch in stream.batches(10) for line in batch]
>>> len(lines) > 5, lines[0].startswith(b'{"event_id": "e0"')
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

DEFAULT_GROUPS = {
    "sex": {"Female": 0.5, "Male": 0.5},
    "race": {"White": 0.55, "Black": 0.25, "Hispanic": 0.15, "Asian": 0.05},
    "age": {"18-25": 0.2, "25-45": 0.55, "45+": 0.25},
}


@dataclass
class SyntheticStream:
    n_events: int = 300_000
    seed: int = 7
    groups: dict[str, dict[str, float]] = field(default_factory=lambda: DEFAULT_GROUPS)
    shift_at: int | None = None
    shift_attribute: str = "race"
    shift_group: str = "Hispanic"
    shift_logit: float = 1.0
    label_delay_events: int = 5_000  # an outcome follows its prediction this many events later
    label_fraction: float = 0.9  # share of predictions that ever get an outcome
    events_per_second: float = 100.0  # event time advances by 1/this per prediction
    start_ts: float = 1_795_000_000.0
    model: str = "synthetic-credit"

    def arrays(self):
        """(group values per attribute, true risk, score, prediction, label, has_outcome)."""
        rng = np.random.default_rng(self.seed)
        n = self.n_events
        values = {}
        for attribute, shares in self.groups.items():
            names = list(shares)
            p = np.array([shares[k] for k in names], dtype=float)
            values[attribute] = np.array(names, dtype=object)[rng.choice(len(names), size=n, p=p / p.sum())]
        risk_logit = rng.normal(-0.4, 1.0, size=n)
        label = (rng.random(n) < 1 / (1 + np.exp(-risk_logit))).astype(np.int64)
        score_logit = risk_logit + rng.normal(0, 0.5, size=n)
        if self.shift_at is not None:
            shifted = (np.arange(n) >= self.shift_at) & (values[self.shift_attribute] == self.shift_group)
            score_logit = score_logit + self.shift_logit * shifted
        score = 1 / (1 + np.exp(-score_logit))
        prediction = (score >= 0.5).astype(np.int64)
        has_outcome = rng.random(n) < self.label_fraction
        return values, score, prediction, label, has_outcome

    def batches(self, batch_size: int = 4096) -> Iterator[list[bytes]]:
        """JSON lines, predictions interleaved with the outcomes that follow them."""
        values, score, prediction, label, has_outcome = self.arrays()
        attributes = list(values)
        columns = [values[a].tolist() for a in attributes]
        scores, predictions, labels = score.round(4).tolist(), prediction.tolist(), label.tolist()
        outcomes = has_outcome.tolist()
        step = 1.0 / self.events_per_second
        delay = self.label_delay_events
        batch: list[bytes] = []
        model = self.model
        for i in range(self.n_events + delay):
            if i < self.n_events:
                groups = ", ".join(f'"{a}": "{col[i]}"' for a, col in zip(attributes, columns))
                batch.append(
                    f'{{"event_id": "e{i}", "ts": {self.start_ts + i * step:.3f}, "model": "{model}", '
                    f'"prediction": {predictions[i]}, "score": {scores[i]}, "groups": {{{groups}}}}}'.encode()
                )
            j = i - delay
            if j >= 0 and outcomes[j]:
                batch.append(
                    f'{{"event_id": "e{j}", "ts": {self.start_ts + i * step:.3f}, "label": {labels[j]}}}'.encode()
                )
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


# -- a stream with gaps just inside the thresholds (decision tests, benchmarks) --
NEAR_THRESHOLD_SHARES = {
    "A": [0.45, 0.25, 0.15, 0.10, 0.04, 0.01],
    "B": [0.6, 0.4],
    "C": [0.5, 0.3, 0.2],
}
SHIFTED_GROUP = 2  # A's 15% group
BASE_RATE, TPR0, FPR0, SPREAD = 0.4, 0.65, 0.2, 0.07


def near_threshold_stream(seed: int, n: int, shift_at: int | None = None, shift: float = 0.3,
                          spread: float = SPREAD):
    """Group codes of attributes A, B, C, predictions and labels of a stream
    whose true gaps (A and B; C has none) are ``spread``: 0.03 inside the
    default thresholds unless told; from ``shift_at`` on, TPR and FPR of A's
    15% group rise by ``shift``. Used by the false-alarm benchmark and the
    decision tests."""
    rng = np.random.default_rng(seed)
    codes = {a: rng.choice(len(s), size=n, p=np.array(s) / sum(s)) for a, s in NEAR_THRESHOLD_SHARES.items()}
    # Ranks spread evenly over [0, SPREAD]; the groups of A are in shuffled
    # order so that the smallest groups are not always the extremes.
    rank_a = rng.permutation(len(NEAR_THRESHOLD_SHARES["A"])) / (len(NEAR_THRESHOLD_SHARES["A"]) - 1)
    rank_b = np.arange(len(NEAR_THRESHOLD_SHARES["B"])) / (len(NEAR_THRESHOLD_SHARES["B"]) - 1)
    lift = spread * rank_a[codes["A"]] + spread * rank_b[codes["B"]] - spread / 2
    label = (rng.random(n) < BASE_RATE).astype(np.int64)
    tpr, fpr = TPR0 + lift, FPR0 + lift
    if shift_at is not None:
        shifted = (np.arange(n) >= shift_at) & (codes["A"] == SHIFTED_GROUP)
        tpr, fpr = tpr + shift * shifted, fpr + shift * shifted
    prediction = (rng.random(n) < np.where(label == 1, tpr, fpr)).astype(np.int64)
    return codes, prediction, label
