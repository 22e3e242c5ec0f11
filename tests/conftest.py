"""Fixtures several test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh spool for a test that starts its own daemons; they are killed at the end."""
    s = Site(tmp_path)
    yield s
    s.stop_all()
