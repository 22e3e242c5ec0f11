"""The worker's file-writing thread: order kept, stale snapshots skipped, errors surfaced."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ktrdr_daemon.file_writer import FileWriter


def test_writes_land_in_order_and_replaces_are_atomic(tmp_path: Path) -> None:
    files = FileWriter(tmp_path)
    log, snapshot = tmp_path / "log.txt", tmp_path / "progress.json"
    for i in range(200):
        files.append(log, f"line {i}\n".encode())
        files.replace(snapshot, f'{{"n": {i}}}'.encode())
    files.flush()
    assert log.read_text().splitlines() == [f"line {i}" for i in range(200)]
    assert snapshot.read_text() == '{"n": 199}'
    files.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "progress.json"]


def test_a_newer_replace_takes_a_pending_ones_place_without_making_its_bytes(
        tmp_path: Path) -> None:
    files = FileWriter(tmp_path)
    release = threading.Event()
    made: list[str] = []

    def blocking() -> bytes:  # holds the thread, so what follows stays pending
        release.wait(10)
        return b"first"

    def make(name: str) -> bytes:
        made.append(name)
        return name.encode()

    files.replace(tmp_path / "other", blocking)
    files.replace(tmp_path / "state.ckpt", lambda: make("epoch 1"))
    files.replace(tmp_path / "progress.json", lambda: make("queued between"))
    files.replace(tmp_path / "state.ckpt", lambda: make("epoch 2"))
    release.set()
    files.close()
    # Epoch 1's checkpoint was never serialized; epoch 2's took its place in the queue, so it is
    # not written after what was queued between them.
    assert made == ["epoch 2", "queued between"]
    assert (tmp_path / "state.ckpt").read_bytes() == b"epoch 2"


def test_a_write_error_is_raised_in_the_callers_thread(tmp_path: Path) -> None:
    files = FileWriter(tmp_path)
    files.replace(tmp_path / "gone" / "progress.json", b"{}")  # its folder was removed
    with pytest.raises(FileNotFoundError):
        files.flush()
    with pytest.raises(FileNotFoundError):  # and every later call, until the job gives up
        files.append(tmp_path / "log.txt", b"x\n")
    with pytest.raises(FileNotFoundError):
        files.close()
    assert not (tmp_path / "gone").exists()
