"""The README's metric table lists every name the monitor defines."""

from __future__ import annotations

import re

from helpers import REPO

from monitor import metric_names
from monitor.scorer import metric_names as scorer_metric_names


def test_every_metric_name_is_in_the_readme_table():
    defined = {value for module in (metric_names, scorer_metric_names) for value in vars(module).values()
               if isinstance(value, str) and value.startswith("fairwatch_")}
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Metrics on /metrics"):text.index("## Performance")]
    listed = set(re.findall(r"`(fairwatch_[a-z_]+)`", table))
    assert not defined - listed, f"add to the README's metric table: {sorted(defined - listed)}"
    assert not listed - defined, f"the README lists names no module defines: {sorted(listed - defined)}"
