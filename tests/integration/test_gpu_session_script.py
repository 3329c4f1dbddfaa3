"""benchmarks/gpu_session.sh, the one call that measures the pending GPU figures, runs through in its small CPU form:
a slip in it must show here, not in a device slot of a few minutes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WAIT_FACTOR

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LIMIT_SCALE = max(1, round(WAIT_FACTOR))  # the script's step limits, stretched like every readiness wait


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scorer_fixtures import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), "random")


@pytest.mark.timeout(600 * LIMIT_SCALE)
def test_every_step_runs_and_writes_its_figures(tiny_model, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    data = tmp_path / "data"  # no templates there: the scorer benchmark generates its texts
    data.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "N": "200", "BERT_ARGS": "--quick --device cpu",
           "KAFKA_EVENTS": "3000", "KAFKA_ARGS": "--latency-seconds 2", "LIMIT_SCALE": str(LIMIT_SCALE),
           # inductor's compile on two cores takes minutes; tests/unit/test_benchmark_scorer_cpu.py runs --compile
           "COMPILE": "0"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), str(tiny_model), str(data), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=590 * LIMIT_SCALE)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith("=== ")]
    assert [line.split(" ", 2)[2] for line in steps] == [
        "setup", "1. scorer end to end, eager (#15)", "2. BERT-base size beside the GEMM rate (#15)",
        "3. Kafka worker (#16)", "done"]
    scorer = json.loads((out / "scorer.json").read_text())
    assert "ours_compiled" not in scorer and scorer["ours"]["sequences_per_s"] > 0
    assert json.loads((out / "bert_base.json").read_text())["gemm"]["tflops"] > 0
    kafka = (out / "kafka.log").read_text()
    assert "fairwatch run worker, confluent" in kafka and "latency, confluent worker" in kafka, kafka[-2000:]
