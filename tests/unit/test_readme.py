"""The metric reference (docs/metrics.md) is the table generated from the modules that define the names."""

from __future__ import annotations

from helpers import REPO

from fairwatch.monitor import metric_reference


def test_every_defined_metric_has_a_reference_entry():
    metric_reference.markdown()  # raises on a name without an entry, or an entry without a name


def test_the_reference_table_is_current():
    text = (REPO / "docs" / "metrics.md").read_text()
    assert metric_reference.splice(text) == text, \
        "run `python -m fairwatch.monitor.metric_reference --write docs/metrics.md`"
