"""Shared fixtures: the real-data folder beside the checkout and small synthetic face sets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("FACEVAE_REAL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data`` (or $FACEVAE_REAL_DATA); skips the test when it is absent."""
    if not (REAL_DATA / "age_gender_part1.csv.gz").is_file():
        pytest.skip(f"real UTKFace data not found at {REAL_DATA} (team material beside the checkout)")
    return REAL_DATA
