"""Attacks on the spool protocol without a daemon (issue 16): real files of every type, real
processes racing, real CLI commands. The attacks that need a live daemon are in
``tests/test_daemon_faults.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ktrdr_daemon import atomic
from ktrdr_daemon import spool as sp
from ktrdr_daemon.spool import Incoming, JobFileError, Spool, accept_drop

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ktrdr_daemon.cli"]
VALID = b"strategy: rsi_mlp.yaml\nseed: 7\n"


def cli(*args: str, spool: Spool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--spool", str(spool.root)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def accept_all(spool: Spool, settle: float = 0.05) -> list[str | None]:
    return [accept_drop(spool, path) for path in Incoming(spool, settle=settle).complete_drops()]


# -- fault 3: `clean` racing with drops -----------------------------------------------------------

CLEANER = """
    import sys, time
    from pathlib import Path
    from ktrdr_daemon import atomic, spool as sp
    atomic.FSYNC = False
    spool = sp.Spool(Path(sys.argv[1]))
    stop = Path(sys.argv[2])
    rounds = 0
    while not stop.exists():
        sp.clean(spool, 0.0)
        rounds += 1
    print(rounds)
"""


def test_clean_racing_3000_drops_never_removes_a_drop_being_accepted(spool: Spool) -> None:
    """Attack: `clean --older-than 0s` in a loop while 3,000 drops are accepted. Every drop
    must end up as a job holding its bytes: clean removes only finished jobs and empty
    folders, and an empty folder only by rmdir, which fails once a drop was renamed in."""
    atomic.FSYNC = False
    stop = spool.root / "stop-cleaning"
    cleaners = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(CLEANER),
                                  str(spool.root), str(stop)], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
                for _ in range(3)]
    time.sleep(1.0)  # they are cleaning before the first drop
    try:
        names = [f"race{i}" for i in range(3000)]
        for name in names:
            drop = spool.incoming / f"{name}.yaml"
            staged = spool.root / f".{name}"
            staged.write_bytes(VALID + f"# {name}\n".encode())
            os.rename(staged, drop)
            accept_drop(spool, drop)  # what a daemon does, in this process
    finally:
        stop.touch()
        outputs = [cleaner.communicate(timeout=60) for cleaner in cleaners]
        atomic.FSYNC = True
    for cleaner, (out, err) in zip(cleaners, outputs, strict=True):
        assert cleaner.returncode == 0, err
        assert int(out) > 0  # the cleaner really ran alongside
    missing = []
    for name in names:
        submitted = spool.jobs / name / "submitted.yaml"
        if not submitted.is_file() or f"# {name}".encode() not in submitted.read_bytes():
            missing.append(name)
    assert missing == [], f"{len(missing)} drops lost: {missing[:10]}"
    assert not any(spool.incoming.iterdir())


def accept_all_valid(spool: Spool, name: str) -> list[str | None]:
    (spool.incoming / f"{name}.yaml").write_bytes(VALID)
    return accept_all(spool)


# -- fault 8: a FIFO, a socket, a directory named x.yaml ---------------------------------------


def test_every_drop_of_any_file_type_gets_an_outcome(spool: Spool) -> None:
    """Attack: `mkfifo incoming/pipe.yaml`, `mkdir incoming/folder.yaml`, a socket. Each
    becomes a job that ends failed saying what it is; nothing is left in incoming/ forever
    and nothing blocks (a FIFO is never opened for a blocking read)."""
    import socket

    os.mkfifo(spool.incoming / "pipe.yaml")
    (spool.incoming / "folder.yaml").mkdir()
    (spool.incoming / "folder.yaml" / "inside.yaml").write_bytes(VALID)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(spool.incoming / "sock.yaml"))
    try:
        ids = accept_all(spool)
    finally:
        server.close()
    assert sorted(ids) == ["folder", "pipe", "sock"]
    for job_id, word in (("pipe", "named pipe"), ("folder", "directory"), ("sock", "socket")):
        result = sp.read_result(spool, job_id)
        assert result is not None and result["state"] == "failed"
        assert word in result["error"]["message"] and f"{job_id}.yaml" in result["error"]["message"]
    assert not any(spool.incoming.iterdir())
    shown = cli("show", "pipe", "--json", spool=spool)  # reading it must not block on the FIFO
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "failed"


def test_a_plain_folder_in_incoming_is_left_alone(spool: Spool) -> None:
    (spool.incoming / "my-staging").mkdir()
    assert accept_all(spool) == []
    assert (spool.incoming / "my-staging").is_dir()


# -- fault 7: a slow writer ----------------------------------------------------------------------

ECHO_WRITER = """
for line in 'strategy: rsi_mlp.yaml' 'seed: 7' 'overrides:' '  training:' '    epochs: 2'; do
    echo "$line" >> "$1"
    sleep 0.3
done
"""


def test_a_slow_echo_appender_makes_one_job_with_the_whole_file(spool: Spool) -> None:
    """Attack: five `echo >>` with pauses. Each echo closes the file, which once made a drop
    look complete (three jobs from one file). The settle rule waits until it stops changing."""
    target = spool.incoming / "slow.yaml"
    writer = subprocess.Popen(["bash", "-c", ECHO_WRITER, "writer", str(target)])
    incoming, ids = Incoming(spool), []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (writer.poll() is None or not ids):
        ids += [accept_drop(spool, path) for path in incoming.complete_drops(wait=False)]
        time.sleep(0.05)
    assert writer.wait() == 0
    ids += [accept_drop(spool, path) for path in incoming.complete_drops()]
    assert ids == ["slow"]
    job = sp.read_job(spool, "slow")
    assert job is not None and job["seed"] == 7 and job["overrides"] == {"training": {"epochs": 2}}


# -- fault 10: a hard-linked drop; an unreadable result.json ------------------------------------


def test_a_hard_linked_drop_is_copied_not_followed(spool: Spool, tmp_path: Path) -> None:
    """Attack: `ln my-job.yaml incoming/`. The job must keep the bytes it was accepted with
    when the user edits their file afterwards."""
    mine = tmp_path / "my-job.yaml"
    mine.write_bytes(VALID)
    os.link(mine, spool.incoming / "linked.yaml")
    assert accept_all(spool) == ["linked"]
    with open(mine, "ab") as handle:  # the user edits in place
        handle.write(b"priority: 99\n")
    submitted = spool.jobs / "linked" / "submitted.yaml"
    assert submitted.read_bytes() == VALID
    assert os.stat(submitted).st_nlink == 1 and os.stat(mine).st_nlink == 1


def test_an_unreadable_result_reads_failed_everywhere_and_retries(spool: Spool) -> None:
    """Attack: result.json truncated or edited into garbage. `ls` and `retry` must agree: the
    job is failed (its result says why), and `retry` requeues it."""
    (job_id,) = accept_all_valid(spool, "garbled")
    (spool.jobs / job_id / "result.json").write_bytes(b'{"state": "compl')
    listed = cli("ls", "--json", spool=spool)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "failed" and "unreadable" in row["error"]
    retried = cli("retry", job_id, spool=spool)
    assert retried.returncode == 0, retried.stderr
    assert sp.job_state(spool, job_id) == "queued"
    archived = [p for p in (spool.jobs / job_id / "attempts").iterdir()
                if p.name.startswith("retry.")]
    assert len(archived) == 1


# -- fault 9: NaN seconds; an empty claim; submit and mode: gpu ---------------------------------


@pytest.mark.parametrize("value", [".nan", ".inf", "-1"])
def test_wait_for_gpu_must_be_finite_seconds(value: str) -> None:
    data = f"strategy: rsi_mlp.yaml\nexecution: {{mode: gpu, wait_for_gpu: {value}}}\n".encode()
    with pytest.raises(JobFileError, match="wait_for_gpu"):
        sp.parse_drop(data, "nan.yaml")


def test_an_empty_claim_is_judged_by_its_silence_and_reclaimed(spool: Spool) -> None:
    """Attack: `: > jobs/x/attempts/1.claim`. It names no owner: it must expire like a silent
    owner on another host, not show the job running forever."""
    (job_id,) = accept_all_valid(spool, "emptyclaim")
    attempts = spool.jobs / job_id / "attempts"
    attempts.mkdir()
    (attempts / "1.claim").write_bytes(b"")
    assert sp.job_state(spool, job_id) == "running"
    me = sp.DaemonIdentity.current("reclaimer")
    judge = sp.LivenessJudge(me, t_expire=0.2)
    assert sp.find_reclaimable(spool, judge) == []  # first look: silence starts now
    time.sleep(0.3)
    (found,) = sp.find_reclaimable(spool, judge)
    assert found.job_id == job_id and "no heartbeat" in found.reason
    assert sp.reclaim(spool, found, me)
    claim = sp.try_claim(spool, job_id, me)
    assert claim is not None and claim.attempt == 2


def test_submit_refuses_mode_gpu_like_require_gpu_when_no_gpu_daemon_is_alive(
        spool: Spool, tmp_path: Path) -> None:
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "rsi_minimal.yaml").write_bytes(
        (ROOT / "config" / "strategies" / "rsi_minimal.yaml").read_bytes())
    job = tmp_path / "gpu-job.yaml"
    job.write_text("strategy: rsi_minimal.yaml\nexecution: {mode: gpu}\n")
    done = cli("submit", str(job), "--strategies", str(strategies), spool=spool)
    assert done.returncode != 0
    assert "mode is gpu" in done.stderr and "no GPU daemon is alive" in done.stderr
    assert not any(spool.incoming.iterdir())


# -- fault 5: a malformed peer heartbeat -----------------------------------------------------------


def test_a_malformed_peer_heartbeat_is_reported_dead_not_a_crash(spool: Spool) -> None:
    peer = {"id": "peer", "host": "elsewhere", "pid": "one", "device": 5, "free_slots": "x",
            "slots": None, "running": [1, 2], "beat": 3}
    (spool.daemons / "peer.json").write_text(json.dumps(peer))
    judge = sp.LivenessJudge(sp.DaemonIdentity.current("reader"))
    (record,) = sp.read_daemons(spool, judge)
    assert record["alive"] is False and "malformed" in record["dead_reason"]
    assert "device" not in record and "free_slots" not in record
    listed = cli("daemons", "--no-wait", spool=spool)
    assert listed.returncode == 0, listed.stderr
    assert "peer" in listed.stdout


# -- fault 6: the spool's folders removed ---------------------------------------------------------


def test_publishing_recreates_a_removed_tmp_folder(spool: Spool) -> None:
    import shutil

    shutil.rmtree(spool.tmp)
    sp.submit_drop(spool, VALID, "after-rm.yaml")
    assert (spool.incoming / "after-rm.yaml").read_bytes() == VALID
    assert spool.tmp.is_dir()
