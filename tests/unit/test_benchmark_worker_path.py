"""benchmarks.worker_path prints a cost for each step of the worker's path, beside its baselines."""
from __future__ import annotations

import re

from benchmarks import worker_path


def test_worker_path_benchmark_prints_every_step_with_a_positive_cost(capsys) -> None:  # noqa: ANN001
    worker_path.main(["--events", "12000", "--repeats", "1"])
    rows = re.findall(r"^  (.+?)\s+(\d+\.\d\d)", capsys.readouterr().out, flags=re.MULTILINE)
    names = [name for name, _ in rows]
    assert len(rows) == 4 + len(worker_path.BATCHES)
    assert names[0].startswith("json.loads") and "baseline" in names[0]
    assert [name for name in names if "process_events" in name and "(baseline)" in name] == [
        f"Pipeline.process_events, batches of {worker_path.FORMER_MAX_POLL_RECORDS:,} (baseline)"]
    assert all(float(cost) > 0 for _, cost in rows)
