"""benchmarks.core_paired, the harness behind the paired core figures in docs/performance.md, runs end to end."""

from __future__ import annotations

import re

from benchmarks import core_paired


def test_it_writes_lines_then_prints_the_core_cost_beyond_parsing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(core_paired, "tune_gc", lambda: None)  # the commands' collector settings are process-wide
    lines = tmp_path / "lines.jsonl"
    core_paired.main(["--write-lines", str(lines), "--events", "3000"])
    assert len(lines.read_bytes().splitlines()) == 3000
    core_paired.main(["--lines", str(lines), "--repeats", "1", "--label", "here"])
    out = capsys.readouterr().out
    match = re.search(r"here: 3,000 lines; pipeline ([\d.]+), parse in batches ([\d.]+), .* beyond parsing (-?[\d.]+)", out)
    assert match, out
    pipeline, parse, beyond = map(float, match.groups())
    # Not pipeline > parse: one pause of the scheduler during the single parse timing reverses them.
    assert pipeline > 0 and parse > 0 and abs(pipeline - parse - beyond) < 0.02
