"""The spool protocol with real files and real processes (no mocks): spec sections 1-3, 5-6.

Child processes are started with ``spawn`` or as ``python -c`` scripts, the way separate daemons
would run; the races below are between processes, not threads.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ktrdr_daemon import job_index
from ktrdr_daemon import spool as sp
from ktrdr_daemon.spool import (
    DaemonIdentity,
    Incoming,
    LivenessJudge,
    Spool,
    accept_drop,
    clean,
    find_reclaimable,
    job_info,
    job_state,
    list_jobs,
    queued_jobs_in_order,
    read_daemons,
    read_result,
    reclaim,
    request_cancel,
    retry_job,
    submit_drop,
    try_claim,
    write_daemon_heartbeat,
    write_result,
)

VALID = b"strategy: rsi_mlp.yaml\nsymbols: [EURUSD]\nseed: 7\n"


@pytest.fixture
def me() -> DaemonIdentity:
    return DaemonIdentity.current("test-daemon")


def drop(spool: Spool, name: str, data: bytes) -> Path:
    """Drop the recommended way: write elsewhere, rename into incoming/."""
    staged = spool.root / f"staged-{name}"
    staged.write_bytes(data)
    target = spool.incoming / name
    os.rename(staged, target)
    return target


def accept_all(spool: Spool, validate=None) -> list[str]:
    incoming = Incoming(spool)
    return [accept_drop(spool, path, validate) for path in incoming.complete_drops()]


def queued_job(spool: Spool, name: str = "job", data: bytes = VALID) -> str:
    drop(spool, f"{name}.yaml", data)
    (job_id,) = accept_all(spool)
    return job_id


def run_script(code: str, *args: str) -> subprocess.Popen[str]:
    """A separate Python process running ``code`` (a daemon stand-in)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float = 10.0, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


# --- Accepting drops -------------------------------------------------------------------------


def test_renamed_drop_is_accepted_byte_for_byte(spool: Spool) -> None:
    data = b"# my job\r\nstrategy: rsi_mlp.yaml   # trailing comment\r\npriority: 3\r\n"
    drop(spool, "eurusd-rsi.yaml", data)
    drops = Incoming(spool, settle=0.05).complete_drops()
    job_id = accept_drop(spool, drops[0])

    assert job_id == "eurusd-rsi"
    job_dir = spool.jobs / job_id
    assert (job_dir / "submitted.yaml").read_bytes() == data
    assert not any(spool.incoming.iterdir())
    job = yaml.safe_load((job_dir / "job.yaml").read_text())
    assert job["id"] == job_id and job["priority"] == 3 and job["strategy"] == "rsi_mlp.yaml"
    assert job["submitted_at"].endswith("Z")
    assert job["execution"] == {
        "mode": "auto",
        "require_gpu": False,
        "max_attempts": 3,
        "wait_for_gpu": 0,
    }
    assert job_state(spool, job_id) == "queued"


def test_ignored_names_are_left_alone(spool: Spool) -> None:
    names = [".hidden.yaml", "a.yaml.tmp", "b.yaml.part", ".c.yaml.swp", "d.yaml~"]
    for name in names:
        (spool.incoming / name).write_bytes(VALID)
    (spool.incoming / "folder").mkdir()
    incoming = Incoming(spool)
    assert incoming.complete_drops() == []
    time.sleep(0.1)
    assert incoming.complete_drops() == []
    assert sorted(p.name for p in spool.incoming.iterdir()) == sorted([*names, "folder"])
    assert not any(spool.jobs.iterdir())


SLOW_WRITER = """
    import sys, time
    with open(sys.argv[1], "wb") as f:
        for i in range(10):
            f.write(b"k%d: %d\\n" % (i, i))
            f.flush()
            time.sleep(0.03)
"""


def test_a_slowly_written_copy_is_taken_only_when_complete(spool: Spool) -> None:
    target = spool.incoming / "slow.yaml"
    writer = run_script(SLOW_WRITER, str(target))
    incoming, accepted = Incoming(spool), []
    deadline = time.monotonic() + 10
    while not accepted and time.monotonic() < deadline:
        for path in incoming.complete_drops():
            accepted.append((accept_drop(spool, path), writer.poll()))
    assert writer.wait() == 0
    ((job_id, writer_status_at_accept),) = accepted
    assert writer_status_at_accept == 0, "taken while the writer was still writing"
    job = yaml.safe_load((spool.jobs / job_id / "job.yaml").read_text())
    assert [job[f"k{i}"] for i in range(10)] == list(range(10))


# Nine levels of nine aliases: 9**9 values if expanded, a few hundred bytes on disk.
BILLION_LAUGHS = b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + b"".join(
    b"%c: &%c [%s]\n" % (name, name, b", ".join([b"*%c" % previous] * 9))
    for previous, name in zip(b"abcdefgh", b"bcdefghi", strict=True)
)


def reject_strategy(body: dict, source: str) -> tuple[dict, list[str]]:
    """A stand-in for the pipeline's validator."""
    if body.get("strategy") == "missing.yaml":
        raise ValueError(f"{source}: strategy: 'missing.yaml' not found under the strategies root")
    return body, []


BAD_DROPS = [
    ("notyaml.yaml", b"strategy: [unclosed\n", "not valid YAML"),
    ("alist.yaml", b"- a\n- b\n", "expected a mapping"),
    ("scalar.yaml", b"just words\n", "expected a mapping"),
    ("empty.yaml", b"", "is empty"),
    ("blank.yml", b"\n  \n", "is empty"),
    ("binary.yaml", bytes(range(256)) * 4, "binary"),
    ("latin1.yaml", "strategy: caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ("huge.yaml", b"a: " + b"x" * (1 << 20) + b"\n", "over 1024 KiB"),
    ("bomb.yaml", BILLION_LAUGHS, "alias bomb"),
    ("loop.yaml", b"a: &a [*a]\n", "recursive"),
    ("twodocs.yaml", b"a: 1\n---\nb: 2\n", "not valid YAML"),
    ("mode.yaml", b"strategy: s.yaml\nexecution: {mode: fast}\n", "execution.mode: 'fast'"),
    ("prio.yaml", b"strategy: s.yaml\npriority: high\n",
     "priority: expected an integer (higher runs first), got 'high'"),
    ("extra.yaml", b"strategy: s.yaml\nexecution: {gpus: 2}\n", "execution.gpus: unknown key"),
    ("missing.yaml", b"strategy: missing.yaml\n", "strategy: 'missing.yaml' not found"),
    ("notes.txt", VALID, "only .yaml or .yml"),
]


def test_every_bad_drop_ends_failed_with_a_message_and_a_good_one_still_passes(
    spool: Spool,
) -> None:
    for name, data, _ in BAD_DROPS:
        drop(spool, name, data)
    os.symlink("/etc/hostname", spool.incoming / "link.yaml")
    drop(spool, "zz-good.yaml", VALID)

    started = time.monotonic()
    ids = accept_all(spool, reject_strategy)
    assert time.monotonic() - started < 5, "an alias bomb or a huge file must not stall acceptance"
    assert len(ids) == len(BAD_DROPS) + 2 and not any(spool.incoming.iterdir())

    for name, data, expected in [*BAD_DROPS, ("link.yaml", None, "symbolic link")]:
        job_id = Path(name).stem if name != "notes.txt" else "notes.txt"
        result = read_result(spool, job_id)
        assert result is not None, name
        assert result["state"] == "failed", name
        assert result["error"]["where"] == "validation"
        message = result["error"]["message"]
        assert name in message and expected in message, (name, message)
        if data is not None:
            assert (spool.jobs / job_id / "submitted.yaml").read_bytes() == data
        assert not (spool.jobs / job_id / "job.yaml").exists()
    assert job_state(spool, "zz-good") == "queued"
    assert queued_jobs_in_order(spool) == ["zz-good"]


def test_job_id_rules(spool: Spool) -> None:
    (spool.jobs / "taken").mkdir()
    (spool.jobs / "taken" / "submitted.yaml").write_bytes(VALID)
    for name in ["plain_name-1.v2.yaml", "taken.yaml", "my job (1).yaml", "x" * 70 + ".yml"]:
        drop(spool, name, VALID)
    ids = set(accept_all(spool))
    assert "plain_name-1.v2" in ids
    others = ids - {"plain_name-1.v2"}
    assert any(i.startswith("taken-") and len(i) == len("taken-") + 6 for i in others)
    assert any(i.startswith("my-job-1-") for i in others)
    assert any(i.startswith("x" * 56 + "-") for i in others)
    assert all(sp.is_safe_name(i) and len(i) <= 64 for i in ids)
    for bad in ["..", "../etc", "a/b", ".hidden", "-rf", "", "x" * 65]:
        with pytest.raises(ValueError):
            spool.job_dir(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=100))
def test_any_file_name_gives_a_safe_job_id(stem: str) -> None:
    candidates = sp._id_candidates(stem)
    first, second = next(candidates), next(candidates)
    assert sp.is_safe_name(first) and sp.is_safe_name(second) and first != second
    assert "/" not in first and first not in (".", "..")


def test_submit_predicts_the_job_id(spool: Spool) -> None:
    first = submit_drop(spool, VALID, "/somewhere/eurusd.yaml")
    second = submit_drop(spool, VALID, "eurusd.yaml")
    assert first == "eurusd" and second.startswith("eurusd-")
    assert sorted(accept_all(spool)) == sorted([first, second])


def test_a_crash_between_move_and_validation_loses_nothing(spool: Spool) -> None:
    # The state a daemon leaves when killed right after its rename: folder + submitted.yaml.
    (spool.jobs / "orphan").mkdir()
    (spool.jobs / "orphan" / "submitted.yaml").write_bytes(VALID)
    # ... and right after its mkdir: an empty folder, the drop still in incoming/.
    (spool.jobs / "early").mkdir()
    drop(spool, "early.yaml", VALID)

    assert job_info(spool, "orphan").accepted is False
    assert queued_jobs_in_order(spool) == []
    incoming = Incoming(spool, grace=0.2)
    assert incoming.recover_unaccepted() == [], "maybe another daemon's acceptance in flight"
    time.sleep(0.2)
    assert incoming.recover_unaccepted() == ["orphan"]
    (early_id,) = accept_all(spool)
    assert early_id.startswith("early-")
    assert set(queued_jobs_in_order(spool)) == {"orphan", early_id}
    assert incoming.recover_unaccepted() == []


def test_queue_order_is_priority_then_fifo(spool: Spool) -> None:
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]:
        queued_job(spool, name, VALID + b"priority: %d\n" % priority)
    assert queued_jobs_in_order(spool) == ["b", "d", "a", "c", "e"]


def test_listing_thousands_of_jobs_is_fast(spool: Spool) -> None:
    job_yaml = (
        "id: {id}\nsubmitted_at: '2026-01-01T00:00:00.{i:06d}Z'\npriority: {p}\n"
        "execution: {{mode: auto, require_gpu: false, max_attempts: 3, wait_for_gpu: 0}}\n"
        "strategy: rsi_mlp.yaml\nsymbols: [EURUSD]\n"
    )
    for i in range(2000):
        job_dir = spool.jobs / f"job{i:05d}"
        job_dir.mkdir()
        (job_dir / "submitted.yaml").write_bytes(VALID)
        (job_dir / "job.yaml").write_text(job_yaml.format(id=job_dir.name, i=i, p=i % 3))
        if i % 2:
            (job_dir / "result.json").write_text('{"state": "completed"}')
    job_index._job_cache.clear()
    started = time.monotonic()
    jobs = list_jobs(spool)
    cold = time.monotonic() - started
    started = time.monotonic()
    queued = queued_jobs_in_order(spool)
    warm = time.monotonic() - started
    assert len(jobs) == 2000 and len(queued) == 1000
    assert queued[:2] == ["job00002", "job00008"], "priority 2 first, then FIFO"
    assert len(list_jobs(spool, "completed")) == 1000 and list_jobs(spool, "running") == []
    # Generous bounds (the machine may be busy): they catch quadratic work, not milliseconds.
    assert cold < 10.0 and warm < 2.0, (cold, warm)


def test_rescans_skip_finished_folders_until_jobs_changes(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle daemon re-reads only unfinished folders; a retry, a new job or a claim still
    shows in the very next scan, and a change made by hand within LISTING_MAX_AGE_S."""
    def settle() -> None:  # folders as if changed 10 s ago (the racy-mtime rule), each time
        old = time.time() - 10  # a new time, as a real change would have
        for folder in spool.jobs.iterdir():
            os.utime(folder, (old, old))

    for name in ("done", "waiting"):
        (spool.incoming / f"{name}.yaml").write_bytes(VALID)
        accept_drop(spool, spool.incoming / f"{name}.yaml")
    me = DaemonIdentity.current("d1")
    claim = try_claim(spool, "done", me)
    assert claim is not None
    write_result(spool, "done", "failed", claim, error={"message": "boom"})
    settle()
    os.utime(spool.jobs, (time.time() - 10,) * 2)
    states = {f.id: ("ended" if sp.RESULT in f.names else "open") for f in sp.scan_jobs(spool)}
    assert states == {"done": "ended", "waiting": "open"}

    (spool.jobs / "done" / sp.RESULT).unlink()  # by hand: jobs/ itself is unchanged
    settle()
    assert sp.RESULT in {f.id: f.names for f in sp.scan_jobs(spool)}["done"]
    assert try_claim(spool, "waiting", me) is not None  # an unfinished folder: seen at once
    assert "attempts" in {f.id: f.names for f in sp.scan_jobs(spool)}["waiting"]
    monkeypatch.setattr(job_index, "LISTING_MAX_AGE_S", 0.0)  # the periodic full scan sees it
    assert sp.RESULT not in {f.id: f.names for f in sp.scan_jobs(spool)}["done"]
    monkeypatch.undo()

    write_result(spool, "done", "failed", None, error={"message": "boom again"})
    settle()
    sp.scan_jobs(spool)
    retry_job(spool, "done")  # touches jobs/: the next scan is a full one
    assert [j.id for j in sp.queued_jobs(spool, sp.scan_jobs(spool))] == ["done"]
    (spool.incoming / "late.yaml").write_bytes(VALID)
    accept_drop(spool, spool.incoming / "late.yaml")
    assert "late" in {f.id for f in sp.scan_jobs(spool)}


# --- Racing daemons ----------------------------------------------------------------------------


def race_worker(root: str, name: str, expected: int, out: str) -> None:
    """One daemon stand-in: accept drops, claim, 'run' 0-2 ms, publish; until all jobs ended."""
    spool, me = Spool(Path(root)), DaemonIdentity.current(name)
    incoming, claims, results = Incoming(spool), [], 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        for path in incoming.complete_drops(wait=False):
            accept_drop(spool, path)
        for job_id in queued_jobs_in_order(spool):
            claim = try_claim(spool, job_id, me)
            if claim is None:
                continue
            claims.append([job_id, claim.attempt])
            time.sleep(random.uniform(0, 0.002))
            results += write_result(spool, job_id, "completed", claim, model_path=name)
        if sum(1 for _ in spool.jobs.glob("*/result.json")) >= expected:
            break
        time.sleep(0.005)
    Path(out).write_text(json.dumps({"claims": claims, "results": results}))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_racing_daemons_run_every_job_exactly_once(spool: Spool, workers: int) -> None:
    jobs = 300
    ctx = mp.get_context("spawn")
    outs = [spool.root / f"out{i}.json" for i in range(workers)]
    procs = [
        ctx.Process(target=race_worker, args=(str(spool.root), f"d{i}", jobs, str(outs[i])))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    for i in range(jobs):
        drop(spool, f"job{i:03d}.yaml", VALID + b"n: %d\n" % i)
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0

    reports = [json.loads(out.read_text()) for out in outs]
    claims = [tuple(c) for report in reports for c in report["claims"]]
    assert sorted(claims) == sorted({(f"job{i:03d}", 1) for i in range(jobs)})
    assert sum(report["results"] for report in reports) == jobs
    for i in range(jobs):
        job_dir = spool.jobs / f"job{i:03d}"
        assert (job_dir / "submitted.yaml").read_bytes() == VALID + b"n: %d\n" % i
        assert sorted(os.listdir(job_dir / "attempts")) == ["1.beat", "1.claim"]
        assert read_result(spool, job_dir.name)["state"] == "completed"
    assert len(list(spool.jobs.iterdir())) == jobs
    assert not any(spool.incoming.iterdir()) and not any(spool.tmp.iterdir())


# --- Claims, heartbeats, recovery --------------------------------------------------------------

CLAIMER = """
    import json, sys, time
    from pathlib import Path
    from ktrdr_daemon.spool import DaemonIdentity, Spool, try_claim, write_result
    spool = Spool(Path(sys.argv[1]))
    claim = try_claim(spool, sys.argv[2], DaemonIdentity.current("claimer"), t_fence=60)
    print(json.dumps({"attempt": claim.attempt}), flush=True)
    while claim.beat():
        time.sleep(0.05)
    print(json.dumps({"beat": False, "current": claim.still_current(),
                      "published": write_result(spool, sys.argv[2], "completed", claim)}),
          flush=True)
"""


def start_claimer(spool: Spool, job_id: str) -> subprocess.Popen[str]:
    proc = run_script(CLAIMER, str(spool.root), job_id)
    assert json.loads(proc.stdout.readline()) == {"attempt": 1}, proc.stderr.read()
    return proc


def test_a_killed_owner_on_this_host_is_reclaimed_at_once(spool: Spool, me) -> None:
    job_id = queued_job(spool)
    proc = start_claimer(spool, job_id)
    judge = LivenessJudge(me, t_expire=30)
    assert find_reclaimable(spool, judge) == []
    assert job_state(spool, job_id) == "running"
    assert try_claim(spool, job_id, me) is None, "a live claim is never claimed twice"

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (dead,) = find_reclaimable(spool, judge)
    assert (dead.job_id, dead.attempt, dead.record["pid"]) == (job_id, 1, proc.pid)
    assert "is gone" in dead.reason
    assert reclaim(spool, dead, me) is True
    assert reclaim(spool, dead, me) is False, "a second reclaimer of one attempt loses"
    claim = try_claim(spool, job_id, me)
    assert claim is not None and claim.attempt == 2
    assert write_result(spool, job_id, "completed", claim)
    assert read_result(spool, job_id)["attempt"] == 2


def test_a_stopped_owner_expires_and_is_fenced_when_it_wakes(spool: Spool, me) -> None:
    job_id = queued_job(spool)
    proc = start_claimer(spool, job_id)
    judge = LivenessJudge(me, t_expire=1.5)
    assert find_reclaimable(spool, judge) == []
    proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        dead = wait_for(lambda: find_reclaimable(spool, judge), timeout=5)
        waited = time.monotonic() - stopped
        assert 1.4 <= waited < 4.0, waited  # never before T_expire; soon after it
        assert "no heartbeat" in dead[0].reason
        assert reclaim(spool, dead[0], me)
        claim = try_claim(spool, job_id, me)
        assert claim is not None and claim.attempt == 2
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=10)
    assert json.loads(out) == {"beat": False, "current": False, "published": False}, err
    assert not (spool.jobs / job_id / "result.json").exists()
    assert write_result(spool, job_id, "completed", claim)


def test_an_owner_that_cannot_beat_for_t_fence_fences_itself(spool: Spool, me) -> None:
    job_id = queued_job(spool)
    claim = try_claim(spool, job_id, me, t_fence=0.2)
    assert claim.beat() and claim.still_current()
    time.sleep(0.25)
    assert claim.beat() is False and claim.still_owner() is False
    assert claim.beat() is False, "fencing is sticky"
    assert write_result(spool, job_id, "completed", claim) is False


def test_attempts_are_bounded_and_hand_backs_do_not_count(spool: Spool, me) -> None:
    job_id = queued_job(spool, data=VALID + b"execution: {max_attempts: 2}\n")
    first = try_claim(spool, job_id, me)
    assert first.hand_back("SIGTERM") and job_state(spool, job_id) == "queued"
    second = try_claim(spool, job_id, me)
    assert second.attempt == 2 and not first.still_owner()
    assert second.abandon("worker crashed: exit -11")
    third = try_claim(spool, job_id, me)
    assert third.attempt == 3
    assert third.abandon("worker killed: out of memory")
    assert try_claim(spool, job_id, me) is None
    result = read_result(spool, job_id)
    assert result["state"] == "failed"
    assert result["error"]["message"] == (
        "job.yaml: gave up after 2 attempts: worker killed: out of memory")


def test_cancel_a_queued_job_and_a_running_one(spool: Spool, me) -> None:
    queued = queued_job(spool, "queued")
    (spool.jobs / queued / "cancel").touch()
    assert try_claim(spool, queued, me) is None
    result = read_result(spool, queued)
    assert result["state"] == "cancelled" and "cancelled_at" in result

    running = queued_job(spool, "running")
    claim = try_claim(spool, running, me)
    info = job_info(spool, running)
    assert (info.state, info.attempt, info.daemon) == ("running", 1, "test-daemon")
    request_cancel(spool, running)
    assert job_info(spool, running).cancel_requested
    assert claim.still_owner() and not claim.still_current()
    assert write_result(spool, running, "completed", claim) is False, "no model after a cancel"
    assert write_result(spool, running, "cancelled", claim) is True
    assert job_state(spool, running) == "cancelled"
    with pytest.raises(FileNotFoundError):
        request_cancel(spool, "nosuchjob")


def publish_race(root: str, name: str, job_ids: list[str], barrier, out: str) -> None:
    spool = Spool(Path(root))
    barrier.wait()
    won = [jid for jid in job_ids if write_result(spool, jid, "failed", error={"message": name})]
    Path(out).write_text(json.dumps(won))


def test_result_first_writer_wins_across_processes(spool: Spool) -> None:
    job_ids = [f"j{i}" for i in range(100)]
    for job_id in job_ids:
        (spool.jobs / job_id).mkdir()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [spool.root / "w0.json", spool.root / "w1.json"]
    procs = [
        ctx.Process(target=publish_race, args=(str(spool.root), f"w{i}", job_ids, barrier, outs[i]))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    won = [set(json.loads(out.read_text())) for out in outs]
    assert won[0] | won[1] == set(job_ids) and not won[0] & won[1]
    for i, names in enumerate(won):
        for job_id in names:
            assert read_result(spool, job_id)["error"]["message"] == f"w{i}"


def test_retry_requeues_with_a_fresh_budget(spool: Spool, me) -> None:
    job_id = queued_job(spool, data=VALID + b"execution: {max_attempts: 1}\n")
    try_claim(spool, job_id, me).abandon("boom")
    assert try_claim(spool, job_id, me) is None and job_state(spool, job_id) == "failed"
    (spool.jobs / job_id / "cancel").touch()

    assert retry_job(spool, job_id) == 2
    assert job_state(spool, job_id) == "queued" and not (spool.jobs / job_id / "cancel").exists()
    (archive,) = (spool.jobs / job_id / "attempts").glob("retry.2.*.json")
    assert json.loads(archive.read_text())["result"]["state"] == "failed"
    claim = try_claim(spool, job_id, me)
    assert claim.attempt == 2
    assert write_result(spool, job_id, "failed", claim, error={"message": "diverged"})
    retry_job(spool, job_id)
    assert not claim.still_owner(), "a retried job's last attempt is over for its owner"
    claim = try_claim(spool, job_id, me)
    assert claim.attempt == 3
    with pytest.raises(ValueError, match="has not ended"):
        retry_job(spool, job_id)
    assert write_result(spool, job_id, "completed", claim)
    with pytest.raises(ValueError, match="completed"):
        retry_job(spool, job_id)

    # A validation failure retried is validated again by the next rescan.
    drop(spool, "broken.yaml", b"strategy: missing.yaml\n")
    (broken,) = accept_all(spool, reject_strategy)
    retry_job(spool, broken)
    assert job_info(spool, broken).accepted is False
    assert Incoming(spool, grace=0).recover_unaccepted(lambda body, src: (body, [])) == [broken]
    assert job_state(spool, broken) == "queued"


def test_clean_removes_old_terminal_jobs_only(spool: Spool, me) -> None:
    done = queued_job(spool, "done")
    write_result(spool, done, "completed", try_claim(spool, done, me))
    running = queued_job(spool, "running")
    try_claim(spool, running, me)
    queued = queued_job(spool, "queued")
    (spool.jobs / "crashed-mkdir").mkdir()
    models = spool.root / "models"
    models.mkdir()

    assert clean(spool, older_than_s=3600) == []
    assert clean(spool, older_than_s=3600, now=time.time() + 7200) == [done]
    assert sorted(p.name for p in spool.jobs.iterdir()) == sorted([running, queued])
    assert models.exists() and not any(spool.tmp.iterdir())


# --- Daemon heartbeats --------------------------------------------------------------------------


def test_daemon_heartbeats_and_liveness(spool: Spool, me) -> None:
    judge = LivenessJudge(me, t_expire=0.3)
    write_daemon_heartbeat(spool, me, {"device": "cpu", "slots": 1})
    other = DaemonIdentity("remote", "elsewhere", 4242, "1", "another-boot", "pid:[1]")
    write_daemon_heartbeat(spool, other, {"device": "cuda:0"})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gone = DaemonIdentity("gone", me.host, proc.pid, "1", me.boot_id, me.pid_ns)
    write_daemon_heartbeat(spool, gone, {"device": "cpu"})

    alive = {d["id"]: d["alive"] for d in read_daemons(spool, judge)}
    assert alive == {"test-daemon": True, "remote": True, "gone": False}
    time.sleep(0.35)
    write_daemon_heartbeat(spool, me, {"device": "cpu", "slots": 1})
    daemons = {d["id"]: d for d in read_daemons(spool, judge)}
    assert daemons["test-daemon"]["alive"] and daemons["test-daemon"]["device"] == "cpu"
    assert not daemons["remote"]["alive"] and "no heartbeat" in daemons["remote"]["dead_reason"]
