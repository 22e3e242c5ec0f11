"""Fixtures several test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Site

from ktrdr_daemon.spool import Spool


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh spool for a test that starts its own daemons; they are killed at the end."""
    s = Site(tmp_path)
    yield s
    s.stop_all()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """An empty spool with its folders, under the test's own tmp_path."""
    s = Spool(tmp_path / "spool")
    s.ensure_layout()
    return s
