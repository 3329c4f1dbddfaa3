"""The metric reference table (docs/metrics.md), generated from the modules that define the names.

    python -m fairwatch.metric_reference --write docs/metrics.md

rewrites the table between the ``metrics:begin`` and ``metrics:end`` markers. It lives above the
core because it reads the adapters' name modules too (the core imports no adapter).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairwatch.alerts import metric_names as alerts_metric_names
from fairwatch.consumers import metric_names as consumers_metric_names
from fairwatch.monitor import metric_names
from fairwatch.monitor.scorer import metric_names as scorer_metric_names

__all__ = ["MODULES", "defined_names", "main", "markdown", "splice"]

# The core's names, then the scorer's, the consumers' (Kafka worker, outcome join) and the trigger's.
MODULES = (metric_names, scorer_metric_names, consumers_metric_names, alerts_metric_names)
BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def defined_names() -> set[str]:
    return {value for module in MODULES for value in vars(module).values()
            if isinstance(value, str) and value.startswith("fairwatch_")}


def markdown() -> str:
    rows = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    documented: set[str] = set()
    for module in MODULES:
        for names, kind, labels, meaning in module.REFERENCE:
            if twice := documented.intersection(names):
                raise ValueError(f"metrics with two REFERENCE entries: {sorted(twice)}")
            documented.update(names)
            rows.append(f"| {', '.join(f'`{n}`' for n in names)} | {kind} | {labels} | {meaning} |")
    missing = defined_names() - documented
    if missing:
        raise ValueError(f"metrics without a REFERENCE entry: {sorted(missing)}")
    unknown = documented - defined_names()
    if unknown:
        raise ValueError(f"REFERENCE entries naming no defined metric: {sorted(unknown)}")
    return "\n".join(rows)


def splice(text: str) -> str:
    """``text`` with the table between the markers replaced by the generated one."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + markdown() + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print or write the metric reference table")
    parser.add_argument("--write", metavar="FILE", help="rewrite the table between the markers of this file")
    args = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(splice(path.read_text()))
    else:
        sys.stdout.write(markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
