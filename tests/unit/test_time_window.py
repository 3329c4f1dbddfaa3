"""`--from`/`--to` of `fairwatch export` (and a job's window): any time a date can show, else one line."""

from __future__ import annotations

import pytest
from helpers import run_cli

from fairwatch.consumers.time_window import TimeWindow, TimeWindowError, parse_time


@pytest.mark.parametrize("text, words", [
    ("1e20", "lies after the year 9999"),
    ("253402300800", "lies after the year 9999"),
    ("nan", "is not a time since 1970"),
    ("-1", "is not a time since 1970"),
    ("1960-01-01T00:00:00Z", "is not a time since 1970"),
    ("next tuesday", "neither ISO-8601"),
])
def test_a_time_no_date_can_show_is_refused_in_one_line(text, words):
    with pytest.raises(TimeWindowError, match=words):
        parse_time(text, "--from")


def test_the_last_second_of_9999_is_a_time():
    assert TimeWindow.parse("9999-12-31T23:59:59Z", "253402300799").describe() == \
        "9999-12-31T23:59:59Z to 9999-12-31T23:59:59Z"


def test_export_with_a_huge_time_after_the_end_is_one_line(tmp_path):
    result = run_cli("export", "--model", "m", "--from", "1e20", "--to", "5", "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "lies after the year 9999" in result.stderr, result.stderr
