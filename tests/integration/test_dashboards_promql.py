"""Every dashboard query and every Grafana alert expression is valid PromQL, by the real promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from fairwatch.dashboards import alerting
from fairwatch.dashboards.render import dashboards, instantiate, queries, variable_names

# Any value of the right shape: promtool checks syntax and types, not data.
SAMPLE_VALUES = {"model": "credit", "attribute": "sex", "window": "all", "metric": "demographic_parity_difference",
                 "rate": "selection_rate", "datasource": "prometheus"}


def all_expressions() -> list[tuple[str, str]]:
    found = []
    for document in dashboards().values():
        assert variable_names(document) <= set(SAMPLE_VALUES)
        found += [(where, instantiate(expr, SAMPLE_VALUES)) for where, expr in queries(document)]
    found += alerting.expressions(yaml.safe_load(alerting.render()))
    return found


def test_nothing_is_left_unsubstituted():
    for where, expr in all_expressions():
        assert "$" not in expr, f"{where}: {expr}"


def test_promtool_accepts_every_expression(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    expressions = all_expressions()
    # Each expression wrapped as a recording rule: `promtool check rules` parses and type-checks it.
    rules = [{"record": f"fairwatch_check:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    path = tmp_path / "wrapped.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize("broken", ["sum by (model (fairwatch_gap)", "rate(fairwatch_gap)"])
def test_promtool_check_rejects_a_broken_expression(tmp_path, broken):
    """The check above can fail: promtool refuses what Prometheus would refuse."""
    promtool = shutil.which("promtool")
    assert promtool
    path = tmp_path / "broken.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": broken}]}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode != 0
