"""Fixtures shared by several test files."""

from pathlib import Path

import pytest

from mtl.pretrained import resolve_pretrained


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (a required install: see README.md)."""
    return resolve_pretrained("minilm")
