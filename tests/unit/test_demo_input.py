"""``fairwatch demo``: a bad --rate or --seed is one line and exit 2, before any stream is built."""

from __future__ import annotations

import pytest
from helpers import run_cli


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--rate", "-1", "'-1' is not a positive number"),  # was: sleep length must be non-negative
    ("--rate", "0", "'0' is not a positive number"),
    ("--rate", "nan", "'nan' is not a finite number"),
    ("--seed", "-1", "-1 is not a whole number from 0 to 4294967295"),  # was: numpy's "expected non-negative integer" traceback
    ("--seed", "seven", "'seven' is not a whole number"),
])
def test_bad_rate_or_seed_exits_2_with_one_line(flag, value, words):
    result = run_cli("demo", "--events", "1000", "--no-serve", flag, value)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr


def test_seed_zero_and_a_positive_rate_still_run():
    result = run_cli("demo", "--events", "1000", "--no-serve", "--seed", "0", "--rate", "1000000", "--report", "json")
    assert result.returncode == 0, result.stderr
    assert '"demo"' in result.stdout
