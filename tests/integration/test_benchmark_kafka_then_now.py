"""benchmarks.kafka_then_now runs the worker of the commit #16 was filed against beside today's, on a real broker."""
from __future__ import annotations

import re
import subprocess

import pytest

from benchmarks import kafka_then_now

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _has_commit(commit: str) -> bool:
    return subprocess.run(["git", "-C", str(kafka_then_now.ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_commit(kafka_then_now.THEN),
                    reason=f"this checkout lacks commit {kafka_then_now.THEN} (a shallow clone)")
def test_both_workers_read_every_event_and_the_ratio_is_printed(capsys) -> None:  # noqa: ANN001
    assert kafka_then_now.main(["--events", "3000", "--rounds", "1", "--timeout", "300"]) == 0
    out = capsys.readouterr().out
    then, now, ratio = re.search(r"round 1: then ([\d,]+) events/s, now ([\d,]+) \(([\d.]+)x\)", out).groups()
    then, now = (int(rate.replace(",", "")) for rate in (then, now))
    assert then > 0 and now > 0  # each child applied all 3,000 records, or main raised
    assert float(ratio) == pytest.approx(now / then, abs=0.01)
