"""Random generation events with planted per-group rates, for the generation decision tests."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np


def generation_stream(n: int, pick: Callable[[np.random.Generator], dict], seed: int = 0) -> list[str]:
    """``n`` generation events of model "chat" as JSON lines; ``pick(rng)`` gives each event's own fields
    (groups, prompt, response), drawn with the stream's seeded generator."""
    rng = np.random.default_rng(seed)
    return [json.dumps({"event_id": f"g{i}", "ts": 1_795_000_000 + i, "model": "chat", **pick(rng)})
            for i in range(n)]
