"""Sizing figures for docs/operating.md: /metrics series per group, attribute and model, and memory per
prediction held in the journal.

    python -m benchmarks.sizing
"""

from __future__ import annotations

import json
import resource

from prometheus_client import generate_latest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.exporter import make_registry
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.synthetic import SyntheticStream


def series_count(models: int, groups: int, attributes: int = 1, n: int = 20_000) -> int:
    pipeline = Pipeline(MonitorConfig())
    lines = [json.dumps({"event_id": f"{m}-{i}", "ts": 1_795_000_000 + i, "model": f"m{m}", "prediction": i % 2,
                         "score": (i % 10) / 10, "label": (i // 2) % 2,
                         "groups": {f"a{k}": f"g{i % groups}" for k in range(attributes)}}).encode()
             for m in range(models) for i in range(n)]
    for start in range(0, len(lines), 4096):
        pipeline.process_lines(lines[start:start + 4096])
    text = generate_latest(make_registry(pipeline)).decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def bytes_per_prediction(n: int = 300_000) -> float:
    pipeline = Pipeline(MonitorConfig(journal_capacity=n))
    batches = list(SyntheticStream(n_events=n, seed=1).batches())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for batch in batches:
        pipeline.process_lines(batch)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / n


def main() -> None:
    # First: ru_maxrss is a high-water mark, and the series runs would raise it.
    print(f"memory per prediction held: {bytes_per_prediction():.0f} bytes (RSS growth over 300,000)")
    base = series_count(1, 2)
    print(f"series, one model, one attribute of 2 groups: {base}")
    print(f"series per further group: {(series_count(1, 12) - base) / 10:.0f}")
    print(f"series per further attribute of 2 groups: {series_count(1, 2, attributes=2) - base}")
    print(f"series per further model (one attribute, 2 groups): {series_count(2, 2) - base}")


if __name__ == "__main__":
    main()
