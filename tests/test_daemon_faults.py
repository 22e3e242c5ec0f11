"""Attacks on a live daemon (issue 16), the way a user or a bad day makes them: real
``ktrdr-daemon run`` processes, real workers frozen and killed, folders removed under them,
files edited by hand. Each test names the fault it guards; each failed on the code before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import REPO, DaemonProcess, Site, job_yaml, long_job, process_gone

from ktrdr_daemon import spool as sp
from ktrdr_daemon.daemon import EXIT_LOOP_DIED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One CPU daemon, one slot, for the attacks that leave it able to serve."""
    site = Site(tmp_path_factory.mktemp("faults"))
    site.daemon("faults-cpu", slots=1).wait_ready()
    yield site
    site.stop_all()


def serves(site: Site, name: str) -> None:
    """The daemon still serves: a small job dropped now completes."""
    job_id = site.drop(f"{name}.yaml", job_yaml(1))
    result = site.wait_result(job_id)
    assert result["state"] == "completed", site.explain(job_id)


def cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "KTRDR_CONFIG": str(site.root / "none.yaml")}
    return subprocess.run([sys.executable, "-m", "ktrdr_daemon.cli", *args, "--spool",
                           str(site.spool)], cwd=site.root, env=env, capture_output=True,
                          text=True, timeout=120)


# -- fault 9: a GPU job on a busy CPU daemon with no GPU daemon -----------------------------------


def test_a_gpu_job_fails_fast_while_the_cpu_daemon_is_busy(shared: Site) -> None:
    busy = shared.drop("busy.yaml", long_job())
    shared.wait_training(busy)
    gpu = shared.drop("wants-gpu.yaml", job_yaml(1, mode="gpu"))
    result = shared.wait_result(gpu, timeout=30)
    assert result["state"] == "failed" and "no GPU daemon is alive" in result["error"]["message"]
    assert shared.result(busy) is None  # it did not wait for the slot
    shared.cancel(busy)
    assert shared.wait_result(busy)["state"] == "cancelled"


# -- fault 5: a hand-edited job.yaml, a torn one, a malformed peer heartbeat ---------------------


def test_a_hand_edited_job_yaml_fails_that_job_and_the_loop_goes_on(shared: Site) -> None:
    waiting = {name: shared.drop(f"{name}.yaml", job_yaml(1, mode="gpu", wait_for_gpu=3600))
               for name in ("edited", "torn")}
    for job_id in waiting.values():
        shared.wait_accepted(job_id)
    edited = shared.job_dir("edited") / "job.yaml"
    text = edited.read_text().replace("priority: 0", "priority: high")
    assert "priority: high" in text
    staged = edited.with_name(".job.yaml.swp")
    staged.write_text(text)
    os.replace(staged, edited)  # as an editor saves
    torn = shared.job_dir("torn") / "job.yaml"
    torn.write_text(torn.read_text()[:40] + "\n  [unclosed: {\n")
    for job_id, words in (("edited", "priority"), ("torn", "cannot be read")):
        result = shared.wait_result(job_id, timeout=60)  # an in-place edit: the next full scan
        assert result["state"] == "failed" and words in result["error"]["message"], result
    serves(shared, "after-edit")


def test_a_malformed_peer_heartbeat_neither_kills_the_loop_nor_the_daemons_command(
        shared: Site) -> None:
    peer = {"id": "peer", "host": "elsewhere", "pid": 1, "device": 5, "free_slots": "x",
            "running": [1], "beat": 1}
    (shared.spool / "daemons" / "peer.json").write_text(json.dumps(peer))
    try:
        serves(shared, "with-bad-peer")  # an auto job asks about GPU peers
        listed = cli(shared, "daemons", "--no-wait")
        assert listed.returncode == 0, listed.stderr
        assert "malformed" in listed.stdout
    finally:
        (shared.spool / "daemons" / "peer.json").unlink()


# -- fault 6: the spool's folders removed under a running daemon ---------------------------------


def test_tmp_and_incoming_removed_are_recreated_and_drops_still_accepted(shared: Site) -> None:
    shutil.rmtree(shared.spool / "tmp")
    serves(shared, "after-rm-tmp")
    shutil.rmtree(shared.spool / "incoming")
    shared.wait("incoming/ re-created", lambda: (shared.spool / "incoming").is_dir(), 30)
    serves(shared, "after-rm-incoming")


# -- fault 7: a slow `echo >>` writer -------------------------------------------------------------


def test_a_slow_echo_writer_makes_one_job_trained_from_the_whole_file(shared: Site) -> None:
    lines = ["strategy: rsi_minimal.yaml", "seed: 3", "overrides:", "  training:",
             "    epochs: 1"]
    target = shared.spool / "incoming" / "echoed.yaml"
    script = "".join(f"echo '{line}' >> '{target}'; sleep 0.3\n" for line in lines)
    subprocess.run(["bash", "-c", script], check=True)
    result = shared.wait_result("echoed")
    assert result["state"] == "completed", shared.explain("echoed")
    assert (shared.job_dir("echoed") / "submitted.yaml").read_text() == "\n".join(lines) + "\n"
    job = sp.read_job(sp.Spool(shared.spool), "echoed") or {}
    assert job.get("seed") == 3
    others = [p.name for p in (shared.spool / "jobs").iterdir() if p.name.startswith("echoed-")]
    assert others == []


# -- fault 8: a FIFO and a folder in incoming/ ----------------------------------------------------


def test_a_fifo_and_a_folder_dropped_end_failed(shared: Site) -> None:
    os.mkfifo(shared.spool / "incoming" / "fifo.yaml")
    (shared.spool / "incoming" / "dir.yaml").mkdir()
    for job_id, word in (("fifo", "named pipe"), ("dir", "directory")):
        result = shared.wait_result(job_id, timeout=30)
        assert result["state"] == "failed" and word in result["error"]["message"]


# -- fault 9: an empty claim file -----------------------------------------------------------------


def test_an_empty_claim_is_reclaimed_and_the_job_completes(shared: Site) -> None:
    """Attack: `: > jobs/hollow/attempts/1.claim` on a queued job. The job showed running
    forever; an owner nobody can name is judged by its silence and reclaimed."""
    from ktrdr_daemon.settings import Settings
    from ktrdr_daemon.validate import validate_job

    settings = Settings(strategies=shared.strategies)
    private = sp.Spool(shared.spool / "tmp" / "private")  # same filesystem: one rename in
    private.ensure_layout()
    (private.incoming / "hollow.yaml").write_text(job_yaml(1))
    assert sp.accept_drop(private, private.incoming / "hollow.yaml",
                          lambda body, source: validate_job(body, source, settings)) == "hollow"
    (private.jobs / "hollow" / "attempts").mkdir()
    (private.jobs / "hollow" / "attempts" / "1.claim").write_bytes(b"")
    os.rename(private.jobs / "hollow", shared.spool / "jobs" / "hollow")
    assert sp.job_state(sp.Spool(shared.spool), "hollow") == "running"
    result = shared.wait_result("hollow", timeout=90)
    assert result["state"] == "completed" and result["attempt"] == 2, shared.explain("hollow")


# -- fault 4: a running job's folder removed -----------------------------------------------


def test_rm_rf_of_a_running_job_leaves_the_daemon_serving_and_sigterm_clean(site: Site) -> None:
    daemon = site.daemon("rmrf", slots=1).wait_ready()
    victim = site.drop("victim.yaml", long_job())
    site.wait_training(victim)
    shutil.rmtree(site.job_dir(victim))
    serves(site, "after-rmrf")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
    assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]


# -- fault 5: the main loop itself dies -----------------------------------------------------------

# The real CLI, `ktrdr-daemon run`, in which the loop's rescan (the loop body, outside every
# isolated step) raises once the file named first on the command line exists: a bug in the loop
# itself, which no bad job or file can cause any more. Everything else is the shipped daemon.
BROKEN_LOOP = """\
import sys
from pathlib import Path

from ktrdr_daemon import cli
from ktrdr_daemon.daemon import Daemon

real_rescan = Daemon.rescan


def rescan(self):
    real_rescan(self)
    if trigger.exists():
        raise RuntimeError("a bug in the loop itself")


if __name__ == "__main__":  # the fork server imports this file too
    trigger = Path(sys.argv.pop(1))
    Daemon.rescan = rescan
    sys.exit(cli.main(sys.argv[1:]))
"""


class BrokenLoopDaemon(DaemonProcess):
    """``ktrdr-daemon run`` whose loop raises once ``trigger`` exists."""

    def __init__(self, site: Site, daemon_id: str, trigger: Path) -> None:
        super().__init__(site, daemon_id)
        self.script, self.trigger = site.root / "broken_loop.py", trigger
        self.script.write_text(BROKEN_LOOP)

    def command(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.trigger), *super().command()[3:]]


def test_the_main_loops_death_ends_the_process_and_hands_its_job_back(site: Site) -> None:
    """Fault 5: a loop that died while its threads lived on kept the heartbeat going, served
    nothing and ignored SIGTERM. Now the process hands its job back and exits non-zero (a
    service manager restarts it), and a daemon started next resumes the job."""
    trigger = site.root / "break-the-loop"
    broken = BrokenLoopDaemon(site, "broken", trigger)
    broken.start()
    site.daemons.append(broken)
    broken.wait_ready()
    job_id = site.drop("survivor.yaml", long_job(40, max_attempts=1))
    site.wait_training(job_id)
    worker = broken.worker_pid(job_id, 1)
    trigger.touch()
    assert broken.wait_exit(15) == EXIT_LOOP_DIED
    log_text = broken.log_text()
    assert "the daemon's loop died" in log_text and "a bug in the loop itself" in log_text
    end = site.attempt_end(job_id, 1)
    assert end is not None and end["counts"] is False, site.explain(job_id)  # handed back
    site.wait("the worker to be gone", lambda: process_gone(worker), 10, job_id)
    beat = site.spool / "daemons" / "broken.json"
    assert not beat.exists()
    time.sleep(1.0)  # five heartbeat periods: nothing writes it again
    assert not beat.exists() and site.result(job_id) is None

    site.daemon("after", slots=1).wait_ready()
    result = site.wait_result(job_id)
    # max_attempts is 1: attempt 2 runs only because the dying loop handed attempt 1 back.
    assert result["state"] == "completed" and result["attempt"] == 2, site.explain(job_id)
    resumed = [e["resumed_from_epoch"] for e in site.events(job_id)
               if e.get("type") == "state" and e.get("resumed_from_epoch") is not None]
    assert resumed and min(resumed) >= 1


# -- faults 1, 2 and 10: publish, then result ------------------------------------------------------


def freeze_when_published(site: Site, pid: int, job_id: str, timeout: float = 120) -> Path:
    """SIGSTOP the worker the moment its version is in the store (busy-polling the store),
    and return the version; fails the test (to retry) if result.json beat us."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for parent in site.models.glob("*"):
            for entry in os.scandir(parent):
                if "_v" in entry.name and entry.is_dir(follow_symlinks=False):
                    meta = Path(entry.path, "metadata.json")
                    with open(meta) as handle:
                        if json.load(handle).get("job_id") == job_id:
                            os.kill(pid, signal.SIGSTOP)
                            return Path(entry.path)
    raise AssertionError(f"no version of {job_id} appeared\n" + site.explain(job_id))


def published_then_frozen(site: Site, daemon, name: str, text: str) -> tuple[str, int, Path]:
    """Drop jobs until one's worker is frozen with its version published and no result."""
    for attempt in range(4):
        job_id = site.drop(f"{name}{attempt}.yaml", text)
        pid = daemon.worker_pid(job_id, 1)
        version = freeze_when_published(site, pid, job_id)
        if site.result(job_id) is None:
            return job_id, pid, version
        os.kill(pid, signal.SIGCONT)
        site.wait_result(job_id)
    raise AssertionError("the worker wrote its result before the test could freeze it")


def versions_of(site: Site, job_id: str) -> list[Path]:
    return [p for p in site.versions() if (json.loads((p / "metadata.json").read_text())
                                            .get("job_id")) == job_id]


def latest_is_sound(site: Site) -> None:
    for link in site.models.glob("*/*_latest"):
        assert link.resolve().is_dir(), f"{link} points at a withdrawn version"


def test_publish_then_result_is_one_recoverable_transition(site: Site) -> None:
    """Fault 2. A worker frozen right after its version appears, then killed:
    - cancelled meanwhile: the job ends cancelled and its version is withdrawn;
    - out of attempts (max_attempts 1): the job completes with that version, not failed."""
    daemon = site.daemon("publisher", slots=1).wait_ready()
    job_id, pid, version = published_then_frozen(site, daemon, "cancelled", job_yaml(1))
    site.cancel(job_id)
    os.kill(pid, signal.SIGKILL)
    result = site.wait_result(job_id)
    assert result["state"] == "cancelled", site.explain(job_id)
    # result.json first (it decides between racing settlers), then the withdrawal: one rename
    site.wait("the version withdrawn", lambda: not version.exists(), 10, job_id)
    assert versions_of(site, job_id) == []
    latest_is_sound(site)

    job_id, pid, version = published_then_frozen(site, daemon, "last", job_yaml(1, max_attempts=1))
    os.kill(pid, signal.SIGKILL)
    result = site.wait_result(job_id)
    assert result["state"] == "completed", site.explain(job_id)
    assert result["model_path"] == str(version) and versions_of(site, job_id) == [version]
    latest_is_sound(site)


def last_worker_pid(daemon, job_id: str) -> int:
    """The pid of the latest worker the daemon started for ``job_id`` (its log says so)."""
    found = re.findall(rf"{re.escape(job_id)}: attempt \d+ started \(pid (\d+)\)",
                       daemon.log_text(whole=True))
    return int(found[-1])


def test_a_name_reused_after_clean_never_adopts_the_old_model(site: Site) -> None:
    """Fault 1. `reuse` completes, `clean` makes the name free, `reuse` is dropped again and its
    worker crashes mid-training: attempt 2 must train its own model, not take the old one."""
    daemon = site.daemon("reuser", slots=1).wait_ready()
    first = site.wait_result(site.drop("reuse.yaml", job_yaml(1)))
    assert first["state"] == "completed"
    done = cli(site, "clean", "--older-than", "0s")
    assert done.returncode == 0 and not site.job_dir("reuse").exists(), done.stderr
    site.drop("reuse.yaml", job_yaml(6, batch_size=16, seed=11))
    site.wait_training("reuse")
    os.kill(last_worker_pid(daemon, "reuse"), signal.SIGKILL)
    second = site.wait_result("reuse")
    assert second["state"] == "completed" and second["attempt"] == 2, site.explain("reuse")
    assert second["model_path"] != first["model_path"]
    job = sp.read_job(sp.Spool(site.spool), "reuse") or {}
    meta = json.loads((Path(second["model_path"]) / "metadata.json").read_text())
    assert meta["submission"] == job["submission"] and meta["attempt"] == 2


def test_a_killed_workers_staging_folder_is_removed(site: Site) -> None:
    """Fault 10. A worker killed while it writes its version into the store's staging folder:
    the daemon that reaps it removes the folder; the next attempt completes."""
    daemon = site.daemon("stager", slots=1).wait_ready()
    job_id = site.drop("staged.yaml", job_yaml(1))
    pid = daemon.worker_pid(job_id, 1)
    staging = site.models / ".staging"
    deadline = time.monotonic() + 120
    while not (staging.is_dir() and any(f"-{pid}-" in n for n in os.listdir(staging))):
        assert time.monotonic() < deadline and site.result(job_id) is None, site.explain(job_id)
    os.kill(pid, signal.SIGKILL)
    result = site.wait_result(job_id)
    assert result["state"] == "completed" and result["attempt"] == 2, site.explain(job_id)
    assert [n for n in os.listdir(staging) if f"-{pid}-" in n] == []


# -- fault 10: one daemon per identity ------------------------------------------------------------


def test_one_daemon_per_id_and_spool_whatever_the_runtime_dir(site: Site, tmp_path: Path) -> None:
    first = site.daemon("twin", slots=1).wait_ready()
    other_runtime = tmp_path / "other-run"
    other_runtime.mkdir()
    second = site.daemon("twin", env={"XDG_RUNTIME_DIR": str(other_runtime)})
    assert second.wait_exit(90) != 0
    assert "already serving" in second.log_text()
    elsewhere = Site(tmp_path / "elsewhere")  # same id, another spool, same runtime dir
    try:
        third = elsewhere.daemon("twin", env={"XDG_RUNTIME_DIR": str(site.runtime)})
        third.wait_ready()
        assert first.returncode() is None
    finally:
        elsewhere.stop_all()


# -- fault 10: a full model store -----------------------------------------------------------------


def fill(path: Path) -> None:
    """Write until the filesystem refuses another byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 64, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_model_store_fails_once_saying_no_space_left(site: Site) -> None:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(site.models)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        fill(site.models / "filler")
        site.daemon("full", slots=1).wait_ready()
        job_id = site.drop("nospace.yaml", job_yaml(1))
        result = site.wait_result(job_id)
        assert result["state"] == "failed" and result["attempt"] == 1, site.explain(job_id)
        assert "no space left" in result["error"]["message"]
    finally:
        site.stop_all()
        subprocess.run(["umount", "-l", str(site.models)], capture_output=True)
