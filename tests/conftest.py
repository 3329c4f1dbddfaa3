"""Shared fixtures. Test modules import plain helpers from tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import COMPAS


@pytest.fixture(scope="session")
def compas_csv() -> Path:
    if not COMPAS.exists():
        pytest.skip(f"COMPAS data not found at {COMPAS} (../shared/data beside the repo)")
    return COMPAS
