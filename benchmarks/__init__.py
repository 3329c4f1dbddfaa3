from __future__ import annotations


def write_json_report(path: str | None, report: dict) -> None:
    """Write a benchmark's report as JSON to ``path`` (parents created); nothing when None."""
    if path:
        import json
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=1))
