"""Helpers for tests: the CLI as users run it, and shared data locations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
COMPAS = SHARED_DATA / "compas" / "compas-scores-two-years.csv"
COMPAS_FLAGS = ("--id-col", "id", "--label-col", "two_year_recid", "--score-col", "decile_score", "--threshold", "5")


def run_cli(*args, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess: exit codes and stderr as users see them."""
    return subprocess.run(
        [sys.executable, "-m", "fairwatch", *map(str, args)],
        capture_output=True, text=True, input=input, timeout=timeout, cwd=REPO,
    )


def replay_json(*args) -> dict:
    result = run_cli("replay", *args, "--report", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
