"""The metric reference (docs/metrics.md) is the table generated from the modules that define the names."""

from __future__ import annotations

from helpers import REPO

from fairwatch import metric_reference


def test_every_defined_metric_has_a_reference_entry():
    metric_reference.markdown()  # raises on a name without an entry, or an entry without a name


def test_the_reference_table_is_current():
    text = (REPO / "docs" / "metrics.md").read_text()
    assert metric_reference.splice(text) == text, \
        "run `python -m fairwatch.metric_reference --write docs/metrics.md`"


def test_each_metric_name_is_defined_beside_what_exports_it():
    owners: dict[str, set[str]] = {}
    for module in metric_reference.MODULES:
        for value in vars(module).values():
            if isinstance(value, str) and value.startswith("fairwatch_"):
                owners.setdefault(value, set()).add(module.__name__)
    assert {name: found for name, found in owners.items() if len(found) > 1} == {}
    assert owners["fairwatch_consumer_lag"] == owners["fairwatch_join_ready"] == {"fairwatch.consumers.metric_names"}
    assert owners["fairwatch_incidents"] == {"fairwatch.alerts.metric_names"}
    assert owners["fairwatch_gap"] == {"fairwatch.monitor.metric_names"}


def test_the_write_command_rewrites_only_the_table(tmp_path):
    page = tmp_path / "metrics.md"
    page.write_text(f"before\n{metric_reference.BEGIN}\nstale\n{metric_reference.END}\nafter\n")
    assert metric_reference.main(["--write", str(page)]) == 0
    text = page.read_text()
    assert text.startswith(f"before\n{metric_reference.BEGIN}\n| metric |") and text.endswith("\nafter\n")
    assert "stale" not in text and "`fairwatch_consumer_lag`" in text and "`fairwatch_incidents`" in text
