"""The README's metric table is the one generated from the modules that define the names."""

from __future__ import annotations

from helpers import REPO

from fairwatch.monitor import metric_reference


def test_every_defined_metric_has_a_reference_entry():
    metric_reference.markdown()  # raises on a name without an entry, or an entry without a name


def test_the_readme_table_is_current():
    text = (REPO / "README.md").read_text()
    assert metric_reference.splice(text) == text, "run `python -m monitor.metric_reference --write README.md`"
