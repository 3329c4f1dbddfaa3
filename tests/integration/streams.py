"""A synthetic prediction stream with outcomes and redeliveries, and its exact expected counters."""

from __future__ import annotations

import json
import random
from collections import Counter


def synthetic_stream(n: int, topics: dict, seed: int = 7, duplicate_every: int = 97, outcome_delay: int = 300):
    """(messages, expected) for ``n`` distinct predictions.

    Half the labels travel inline, the other half as outcomes ``outcome_delay``
    messages later; every ``duplicate_every``-th prediction is sent twice
    (a producer retry), so the expected duplicates are known exactly.
    """
    rng = random.Random(seed)
    messages, pending = [], []
    expected = Counter()
    for i in range(n):
        race, sex = rng.choice("abc"), rng.choice("FM")
        prediction, label = int(rng.random() < 0.4 + 0.1 * "abc".index(race)), int(rng.random() < 0.45)
        event_id = f"e{i}"
        inline = i % 2 == 0
        body = {"event_id": event_id, "prediction": prediction, "score": round(rng.random(), 3),
                "groups": {"race": race, "sex": sex}, "label": label if inline else None}
        value = json.dumps(body).encode()
        messages.append((topics["predictions"], event_id.encode(), value))
        if i % duplicate_every == 0:
            messages.append((topics["predictions"], event_id.encode(), value))
            expected["duplicates"] += 1
        if not inline:
            pending.append((len(messages) + outcome_delay, event_id, label))
        while pending and pending[0][0] <= len(messages):
            _, oid, olabel = pending.pop(0)
            messages.append((topics["outcomes"], oid.encode(), json.dumps({"event_id": oid, "label": olabel}).encode()))
        cell = {(1, 1): "tp", (1, 0): "fp", (0, 0): "tn", (0, 1): "fn"}[(prediction, label)]
        for attribute, group in (("race", race), ("sex", sex)):
            expected[(attribute, group, "predictions")] += 1
            expected[(attribute, group, "positives")] += prediction
            expected[(attribute, group, "labeled")] += 1
            expected[(attribute, group, cell)] += 1
    for _, oid, olabel in pending:
        messages.append((topics["outcomes"], oid.encode(), json.dumps({"event_id": oid, "label": olabel}).encode()))
    expected["valid"] = n
    return messages, expected


def group_counters(samples: dict) -> Counter:
    """(attribute, group, cell) -> value of fairwatch_group_events_total, summed over series given."""
    from fairwatch.monitor import metric_names as names

    counts = Counter()
    for (name, labels), value in samples.items():
        if name == names.GROUP_EVENTS:
            labels = dict(labels)
            counts[(labels["attribute"], labels["group"], labels["cell"])] += int(value)
    return counts
