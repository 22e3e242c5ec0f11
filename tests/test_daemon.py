"""The daemon with real processes: real ``ktrdr-daemon run`` daemons, real workers, real signals
(spool spec sections 2-4 and 6). Helpers live in ``tests/daemon_helpers.py``.

Starting a daemon costs seconds (torch is imported by the daemon and its fork server), so most
tests share one daemon on one spool, each with its own jobs; those that kill, stop or restart
daemons start their own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import (
    EXPIRE_S,
    DaemonProcess,
    FakeGpuDaemon,
    Site,
    job_yaml,
    long_job,
    process_gone,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One CPU daemon with two slots serving one spool for the tests that do not kill it."""
    site = Site(tmp_path_factory.mktemp("shared"))
    site.daemon("shared-cpu", slots=2).wait_ready()
    yield site
    site.stop_all()


# -- 1. a drop trains; the daemon and `train` give the same model ------------------------------


def test_dropped_job_trains_and_matches_train_command(shared: Site, tmp_path: Path) -> None:
    from ktrdr_daemon.cli import main

    text = job_yaml(3)
    job_id = shared.drop("equivalence.yaml", text)
    result = shared.wait_result(job_id)
    assert result["state"] == "completed", shared.explain(job_id)
    assert result["attempt"] == 1 and result["daemon"] == "shared-cpu"
    model = Path(result["model_path"])
    assert model.parent.parent == shared.models and (model / "model.pt").is_file()
    assert shared.versions(job_id) == [model]
    shared.wait_progress(job_id, "completed")
    assert "12. Done" in shared.log(job_id)

    job_file = tmp_path / "equivalence.yaml"
    job_file.write_text(text)
    models = tmp_path / "models"
    assert main(["train", str(job_file), "--models", str(models),
                 "--strategies", str(shared.strategies)]) == 0
    (local,) = sorted(models.glob("*/*_v*"))
    assert (local / "model.pt").read_bytes() == (model / "model.pt").read_bytes()


# -- 4. cancel -----------------------------------------------------------------------------------


def test_cancel_right_after_the_claim(shared: Site) -> None:
    job_id = shared.drop("cancel-early.yaml", long_job())
    shared.wait_claim(job_id, 1)
    shared.cancel(job_id)  # the worker is starting or loading data
    result = shared.wait_result(job_id, timeout=30)
    assert result["state"] == "cancelled", shared.explain(job_id)
    worker = shared.daemons[0].worker_pid(job_id, 1)
    shared.wait("the worker to exit", lambda: process_gone(worker), 10, job_id)
    assert shared.versions(job_id) == []
    assert shared.attempt_files(job_id)[-1] != "2.claim"


def test_cancel_while_training(shared: Site) -> None:
    job_id = shared.drop("cancel-training.yaml", long_job())
    shared.wait_training(job_id)
    worker = shared.daemons[0].worker_pid(job_id, 1)
    started = time.monotonic()
    shared.cancel(job_id)
    result = shared.wait_result(job_id, timeout=30)
    assert result["state"] == "cancelled" and result["cancelled_at"], shared.explain(job_id)
    assert time.monotonic() - started < 10
    shared.wait("the worker to exit", lambda: process_gone(worker), 10, job_id)
    assert shared.versions(job_id) == []
    shared.wait_progress(job_id, "cancelled")
    assert "2.claim" not in shared.attempt_files(job_id)


def test_cancel_after_completion_changes_nothing(shared: Site) -> None:
    job_id = shared.drop("cancel-late.yaml", job_yaml(1))
    assert shared.wait_result(job_id)["state"] == "completed", shared.explain(job_id)
    before = (shared.job_dir(job_id) / "result.json").read_bytes()
    shared.cancel(job_id)
    time.sleep(1.5)  # several rescans
    assert (shared.job_dir(job_id) / "result.json").read_bytes() == before
    assert len(shared.versions(job_id)) == 1
    assert shared.progress(job_id)["state"] == "completed"


# -- 6. bad drops ----------------------------------------------------------------------------

BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
               for a, b in zip("abcdefg", "bcdefgh", strict=True))
BAD_DROPS = {
    # name: (content, what the error must say besides the file name)
    "bad-yaml.yaml": ("strategy: [rsi_minimal.yaml\nseed: 7\n", "not valid YAML"),
    "bad-list.yaml": ("- strategy\n- seed\n", "expected a mapping"),
    "bad-empty.yaml": ("", "empty"),
    "bad-binary.yaml": (bytes(range(256)) * 4, "binary"),
    "bad-huge.yaml": ("strategy: rsi_minimal.yaml\n# " + "x" * (1 << 20) + "\n", "KiB"),
    "bad-bomb.yaml": ("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB, "alias"),
    "bad-indicator.yaml": ("strategy: rsi_minimal.yaml\n"
                           "overrides: {indicators: {rsi_14: {type: nosuch}}}\n",
                           "indicators.rsi_14.type"),
    "bad-types.yaml": ("strategy: rsi_minimal.yaml\nseed: seven\n", "seed"),
    "bad-execution.yaml": ("strategy: rsi_minimal.yaml\nexecution: {max_attempts: 0}\n",
                           "execution.max_attempts"),
    "bad-escape.yaml": ("strategy: ../../etc/passwd\n", "strategy"),
    "bad-symlink.yaml": ("strategy: outside.yaml\n", "strategy"),
    "bad-data.yaml": ("strategy: rsi_minimal.yaml\nsymbols: ['../x']\n", "symbol"),
}


def test_bad_drops_fail_with_a_message_and_a_valid_job_still_trains(shared: Site,
                                                                    tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"  # a valid strategy, but outside the strategies root
    outside.write_bytes((shared.strategies / "rsi_minimal.yaml").read_bytes())
    (shared.strategies / "outside.yaml").symlink_to(outside)
    for name, (content, _) in BAD_DROPS.items():
        shared.drop(name, content)
    good = shared.drop("after-bad-drops.yaml", job_yaml(1))
    for name, (content, expected) in BAD_DROPS.items():
        job_id = name.removesuffix(".yaml")
        result = shared.wait_result(job_id, timeout=60)
        assert result["state"] == "failed", shared.explain(job_id)
        message = result["error"]["message"]
        assert name in message and expected in message, f"{name}: {message}"
        assert result["error"]["where"] == "validation"
        assert shared.attempt_files(job_id) == []
        submitted = shared.job_dir(job_id) / "submitted.yaml"
        data = content.encode() if isinstance(content, str) else content
        assert submitted.read_bytes() == data  # the drop is kept, byte for byte
        shared.wait_progress(job_id, "failed")
    for job_id in ("bad-escape", "bad-symlink"):
        assert "escapes" in shared.result(job_id)["error"]["message"]
    assert shared.wait_result(good)["state"] == "completed", shared.explain(good)


# -- 7. a job that kills its own process ----------------------------------------------------------


def test_a_worker_that_always_dies_gives_up_after_max_attempts(shared: Site) -> None:
    job_id = shared.drop("always-dies.yaml", long_job(max_attempts=2))
    daemon = shared.daemons[0]
    for attempt in (1, 2):
        os.kill(daemon.worker_pid(job_id, attempt), signal.SIGKILL)
    result = shared.wait_result(job_id, timeout=60)
    assert result["state"] == "failed", shared.explain(job_id)
    assert "always-dies.yaml: gave up after 2 attempts" in result["error"]["message"]
    assert "SIGKILL" in result["error"]["message"]
    assert shared.attempt_files(job_id) == ["1.beat", "1.claim", "1.end", "2.beat", "2.claim",
                                            "2.end"]
    assert shared.versions(job_id) == []
    after = shared.drop("after-dying.yaml", job_yaml(1))
    assert shared.wait_result(after)["state"] == "completed", shared.explain(after)
    assert daemon.returncode() is None


# -- 8. which daemon runs which job -------------------------------------------------------------


def test_mode_matching_with_and_without_a_gpu_daemon(shared: Site) -> None:
    required = shared.drop("needs-gpu.yaml", job_yaml(1, require_gpu=True))
    result = shared.wait_result(required, timeout=30)
    assert result["state"] == "failed" and "no GPU daemon is alive" in result["error"]["message"]
    assert shared.attempt_files(required) == []

    with FakeGpuDaemon(shared):
        auto = shared.drop("auto.yaml", job_yaml(1, mode="auto"))
        gpu = shared.drop("gpu.yaml", job_yaml(1, mode="gpu"))
        local = shared.drop("local.yaml", job_yaml(1, mode="local"))
        assert shared.wait_result(local)["state"] == "completed", shared.explain(local)
        time.sleep(1.0)  # more rescans with the GPU daemon alive
        for job_id in (auto, gpu):
            assert shared.result(job_id) is None, shared.explain(job_id)
            assert shared.attempt_files(job_id) == [], shared.explain(job_id)
        assert "running on CPU" not in shared.log(local)
        # Cancelled while queued for a GPU: ended by the CPU daemon, never started.
        waiting = shared.drop("gpu-cancelled.yaml", job_yaml(1, mode="gpu"))
        shared.wait_accepted(waiting)
        shared.cancel(waiting)
        assert shared.wait_result(waiting, timeout=10)["state"] == "cancelled"
        assert shared.attempt_files(waiting) == []

    result = shared.wait_result(auto)  # no GPU daemon any more: the CPU daemon takes it
    assert result["state"] == "completed", shared.explain(auto)
    assert "running on CPU: no GPU daemon alive" in shared.log(auto)
    result = shared.wait_result(gpu, timeout=30)
    assert result["state"] == "failed" and "no GPU daemon is alive" in result["error"]["message"]
    assert shared.attempt_files(gpu) == []


# -- one daemon per identity ----------------------------------------------------------------


def test_a_second_copy_of_a_daemon_id_exits_with_a_message(shared: Site) -> None:
    first = shared.daemons[0]
    second = DaemonProcess(shared, first.daemon_id)
    second.log_path = shared.root / "second-copy.log"
    second.start()
    try:
        assert second.wait_exit(90) != 0
    finally:
        second.kill()
    assert "already running" in second.log_text() and first.daemon_id in second.log_text()
    assert first.returncode() is None


# -- 3. a daemon dies or stops while its job trains ---------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Two CPU daemons with one slot each on one spool."""
    site = Site(tmp_path_factory.mktemp("pair"))
    daemons = [site.daemon(name) for name in ("pair-a", "pair-b")]
    for daemon in daemons:
        daemon.wait_ready()
    yield site
    site.stop_all()


def _owner_and_other(site: Site, job_id: str, attempt: int = 1) -> tuple:
    claim = site.wait_claim(job_id, attempt)
    (owner,) = [d for d in site.daemons if d.daemon_id == claim["daemon"]]
    (other,) = [d for d in site.daemons if d is not owner]
    return owner, other


def _resumed_from(site: Site, job_id: str) -> list[int]:
    return [e["resumed_from_epoch"] for e in site.events(job_id)
            if e.get("type") == "state" and e.get("resumed_from_epoch") is not None]


def test_sigkill_of_the_owner_is_reclaimed_at_once_and_resumed(pair: Site) -> None:
    # 16 epochs: at 8 a loaded machine (load ~10) once let the orphaned worker finish and
    # publish before the other daemon claimed the job, so there was nothing to resume.
    job_id = pair.drop("owner-killed.yaml", long_job(16))
    owner, other = _owner_and_other(pair, job_id)
    pair.wait_training(job_id)
    worker = owner.worker_pid(job_id, 1)
    owner.send(signal.SIGKILL)
    claim = pair.wait_claim(job_id, 2, timeout=EXPIRE_S + 30)
    assert claim["daemon"] == other.daemon_id
    end = pair.attempt_end(job_id, 1)
    assert end["counts"] and "is gone" in end["reason"], end  # provably dead, not expired
    pair.wait("the orphaned worker to exit", lambda: process_gone(worker), 10, job_id)
    owner.restart()  # the same id comes back (its instance lock died with it)
    result = pair.wait_result(job_id)
    assert result["state"] == "completed" and result["attempt"] == 2, pair.explain(job_id)
    assert result["daemon"] == other.daemon_id
    assert min(_resumed_from(pair, job_id)) >= 1
    # The log says so, and from where: the epochs before the checkpoint are not run again.
    resumed = [line for line in pair.log(job_id).splitlines()
               if line.startswith("resumed from checkpoint")]
    assert len(resumed) == 1 and resumed[0].endswith("(attempt 2)"), pair.log(job_id)
    epoch = min(_resumed_from(pair, job_id))
    where = "after training ended" if epoch == 16 else f"at epoch {epoch + 1} of 16"
    assert resumed[0].startswith(f"resumed from checkpoint {where}"), resumed
    assert pair.versions(job_id) == [Path(result["model_path"])]
    owner.wait_ready()


def test_sigstop_of_the_owner_is_reclaimed_after_expiry_and_publishes_nothing(
        pair: Site) -> None:
    # Long enough that its worker cannot finish within T_fence after the stop, even unloaded
    # (~0.13 s an epoch): until its ticks are T_fence late a worker may still publish.
    job_id = pair.drop("owner-stopped.yaml", long_job(40))
    owner, other = _owner_and_other(pair, job_id)
    pair.wait_training(job_id)
    worker = owner.worker_pid(job_id, 1)
    owner.send(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        claim = pair.wait_claim(job_id, 2, timeout=EXPIRE_S + 30)
        waited = time.monotonic() - stopped
        # The other daemon saw the counter change at most one heartbeat before the stop.
        assert waited >= EXPIRE_S - 0.5, f"reclaimed after {waited:.2f} s"
        assert claim["daemon"] == other.daemon_id
        assert "no heartbeat" in pair.attempt_end(job_id, 1)["reason"]
        # Its ticks stopped, so the stopped daemon's worker fenced itself before the reclaim.
        pair.wait("the fenced worker to exit", lambda: process_gone(worker), 5, job_id)
    finally:
        owner.send(signal.SIGCONT)
    result = pair.wait_result(job_id)
    assert result["state"] == "completed" and result["attempt"] == 2, pair.explain(job_id)
    assert result["daemon"] == other.daemon_id
    assert min(_resumed_from(pair, job_id)) >= 1
    time.sleep(1.0)  # the woken owner had time to do whatever it would do
    assert pair.versions(job_id) == [Path(result["model_path"])]
    assert owner.returncode() is None
    assert pair.result(job_id) == result


# -- 5. SIGTERM hands the attempt back; cancel while queued with no daemon running ------------


def test_sigterm_hands_back_and_a_restart_resumes(site: Site) -> None:
    daemon = site.daemon("term").wait_ready()
    job_id = site.drop("handed-back.yaml", long_job(8, max_attempts=1))
    site.wait_training(job_id)
    queued = site.drop("queued-then-cancelled.yaml", job_yaml(1))
    site.wait_accepted(queued)  # queued behind the running job: one slot
    worker = daemon.worker_pid(job_id, 1)
    daemon.send(signal.SIGTERM)
    started = time.monotonic()
    assert daemon.wait_exit(10) == 0
    assert time.monotonic() - started < 10
    end = site.attempt_end(job_id, 1)
    assert end is not None and end["counts"] is False, site.explain(job_id)
    assert process_gone(worker)
    assert site.result(job_id) is None and site.versions(job_id) == []
    assert not (site.spool / "daemons" / "term.json").exists()
    assert "lost the claim" not in daemon.log_text()  # a hand-back is not a fence
    assert "attempt 1 failed" not in site.log(job_id)

    site.cancel(queued)  # no daemon is running now
    daemon.restart().wait_ready()
    result = site.wait_result(queued, timeout=30)
    assert result["state"] == "cancelled", site.explain(queued)
    assert site.attempt_files(queued) == []  # never started
    # ... and ended at once, not when the slot it waited for came free.
    assert site.result(job_id) is None, site.explain(job_id)

    result = site.wait_result(job_id)
    # max_attempts is 1: attempt 2 runs only because a hand-back does not count.
    assert result["state"] == "completed" and result["attempt"] == 2, site.explain(job_id)
    assert min(_resumed_from(site, job_id)) >= 1
    assert site.versions(job_id) == [Path(result["model_path"])]


# -- 2. daemons racing over many jobs -----------------------------------------------------------

# Fails in its worker at step 1 (a two-day range has fewer bars than history_required): a whole
# claim -> worker -> result cycle in a fraction of a second, where a real train takes seconds.
QUICK_JOB = 'strategy: rsi_minimal.yaml\nstart: "2018-01-29"\nend: "2018-01-31"\n'


@pytest.mark.parametrize(("extra", "quick", "real"), [(0, 100, 4), (2, 120, 6)])
def test_racing_daemons_end_every_job_exactly_once(pair: Site, extra: int, quick: int,
                                                   real: int) -> None:
    """The two daemons of ``pair`` (one slot each), then those and two more (two slots each),
    over jobs dropped in a burst while they run. Every job ends once, on its first attempt."""
    site, prefix = pair, f"race{extra}"
    names = [f"{prefix}-quick-{i:03d}" for i in range(quick)]
    names += [f"{prefix}-real-{i:02d}" for i in range(real)]
    random.Random(extra).shuffle(names)
    racing = [d for d in site.daemons if d.returncode() is None]
    started = [site.daemon(f"{prefix}-{k}", slots=2) for k in range(extra)]
    for name in names[: len(names) // 2]:  # dropped while the extra daemons start
        site.drop(f"{name}.yaml", QUICK_JOB if "-quick-" in name else job_yaml(1))
    for daemon in started:
        daemon.wait_ready()
    racing += started
    assert len(racing) == 2 + extra, site.explain()
    for name in names[len(names) // 2 :]:
        site.drop(f"{name}.yaml", QUICK_JOB if "-quick-" in name else job_yaml(1))
    site.wait("incoming/ to empty", lambda: not os.listdir(site.spool / "incoming"), 90)
    mine = sorted(n for n in os.listdir(site.spool / "jobs") if n.startswith(prefix))
    # None lost, none accepted twice, each under the id `submit` would print: its stem.
    assert mine == sorted(names), f"not the stem: {sorted(set(mine) - set(names))}"
    deadline = time.monotonic() + 150
    for name in names:
        site.wait_result(name, timeout=max(1.0, deadline - time.monotonic()))
    claimers = set()
    for name in names:
        result = site.result(name)
        files = site.attempt_files(name)
        published = [] if "-quick-" in name else ["1.publish"]  # where attempt 1 published
        assert files == ["1.beat", "1.claim", *published], f"{name}: {files}\n" + site.explain(
            name)
        claim = json.loads((site.job_dir(name) / "attempts" / "1.claim").read_text())
        assert result["attempt"] == 1 and result["daemon"] == claim["daemon"]
        claimers.add(claim["daemon"])
        if "-quick-" in name:
            assert result["state"] == "failed", site.explain(name)
            assert "history_required" in result["error"]["message"]
        else:
            assert result["state"] == "completed", site.explain(name)
            assert len(site.versions(name)) == 1
    assert len(claimers) >= 2, claimers
    for daemon in racing:
        # The pair's log also holds earlier tests' jobs (a fenced owner there is expected).
        mine = [line for line in daemon.log_text(whole=True).splitlines()
                if line.split(": ")[0].split()[-1] in set(names)]
        assert not [line for line in mine if "attempt 1 failed" in line], "\n".join(mine)
