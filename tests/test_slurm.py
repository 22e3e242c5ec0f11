"""``ktrdr-daemon run --executor slurm`` against a real single-node Slurm cluster.

The cluster is Debian's slurm-wlm and munge on this machine, set up by
``tests/slurm/setup_cluster.sh`` (run as root before the tests; CI does). Where no cluster
answers, every test here is skipped with the reason. Jobs really go through ``sbatch`` (via
submitit), run under ``slurmd`` and write into the spool and model store on this filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import REPO, Site, job_yaml, long_job

pytestmark = pytest.mark.slow

SETUP = REPO / "tests" / "slurm" / "setup_cluster.sh"
HOST = os.uname().nodename.split(".")[0]
# A Slurm job starts in seconds here, but torch's import and the report are slow on 2 busy cores.
JOB_TIMEOUT_S = 300.0
# Slurm jobs get a lease renewed every 0.2 s and pause after 5 s without it; a silent daemon
# is dead after 10 s. Wider than test_daemon's: sbatch and squeue run inside the loop.
SLURM_ENV = {"KTRDR_FENCE_SECONDS": "5", "KTRDR_EXPIRE_SECONDS": "10",
             "KTRDR_RESCAN_SECONDS": "0.3"}


def _cluster_problem() -> str | None:
    """Why no Slurm cluster can be used here, or None when one answers."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install -e '.[slurm]')"
    if shutil.which("sinfo") is None:
        return f"slurm-wlm is not installed; run {SETUP.relative_to(REPO)} as root"

    def node_state() -> str:
        done = subprocess.run(["sinfo", "-h", "-n", HOST, "-o", "%t"], capture_output=True,
                              text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else ""

    if not node_state().startswith(("idle", "mix", "alloc")) and os.geteuid() == 0:
        subprocess.run(["bash", str(SETUP)], capture_output=True, timeout=600)  # idempotent
    state = node_state()
    if not state.startswith(("idle", "mix", "alloc")):
        return (f"no Slurm cluster answers on {HOST} (sinfo: {state or 'no answer'}); "
                f"run {SETUP.relative_to(REPO)} as root")
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def slurm_site(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One Slurm daemon (two Slurm jobs at once) for the tests that do not kill it."""
    site = Site(tmp_path_factory.mktemp("slurm"))
    site.daemon("slurm-shared", args=slurm_args(max_jobs=2), env=SLURM_ENV).wait_ready()
    yield site
    site.stop_all()


@pytest.fixture
def site(cluster: None, tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.stop_all()
    _scancel_all(s)


def slurm_args(max_jobs: int = 1) -> tuple[str, ...]:
    return ("--executor", "slurm", "--time", "30:00", "--max-jobs", str(max_jobs))


def slurm_record(site: Site, job_id: str) -> dict:
    return json.loads((site.job_dir(job_id) / "slurm.json").read_text())


def scontrol(slurm_job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", slurm_job_id], capture_output=True,
                         text=True, timeout=30).stdout
    return dict(token.partition("=")[::2] for token in out.split())


def submitted_slurm_jobs(site: Site, job_id: str) -> list[str]:
    """Every Slurm job ever submitted for this spool job (submitit's pickles, one a job)."""
    folder = site.job_dir(job_id) / "slurm"
    return sorted(p.name.split("_")[0] for p in folder.glob("*_submitted.pkl"))


def _scancel_all(site: Site) -> None:
    for folder in site.spool.glob("jobs/*/slurm"):
        for pickle in folder.glob("*_submitted.pkl"):
            subprocess.run(["scancel", pickle.name.split("_")[0]], capture_output=True)


# -- a drop trains through Slurm; pending in Slurm shows as queued -----------------------------


def test_a_dropped_job_waits_in_slurm_as_queued_then_trains_into_the_store(
        slurm_site: Site) -> None:
    site = slurm_site
    # A drained node: Slurm accepts the job but cannot start it.
    subprocess.run(["scontrol", "update", f"NodeName={HOST}", "State=DRAIN",
                    "Reason=ktrdr-test"], check=True, timeout=30)
    try:
        job = site.drop("through-slurm.yaml", job_yaml(3))
        pending = site.wait("progress.json to show the Slurm job pending",
                            lambda: "PENDING" in (site.progress(job).get("message") or "")
                            and site.progress(job), 60, job)
        assert pending["state"] == "queued"
        slurm_id = slurm_record(site, job)["slurm_job_id"]
        assert f"Slurm job {slurm_id} PENDING" in pending["message"]
        assert scontrol(slurm_id)["JobState"] == "PENDING"
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={HOST}", "State=RESUME"],
                       check=True, timeout=30)

    result = site.wait_result(job, JOB_TIMEOUT_S)
    assert result["state"] == "completed", site.explain(job)
    model = Path(result["model_path"])
    assert (model / "metadata.json").is_file()
    assert json.loads((model / "metadata.json").read_text())["job_id"] == job
    assert site.versions(job) == [model]
    record = slurm_record(site, job)
    assert record == {**record, "slurm_job_id": slurm_id, "attempt": 1}
    assert submitted_slurm_jobs(site, job) == [slurm_id]
    log = site.log(job)
    assert f"submitted as Slurm job {slurm_id}" in log and "12. Done" in log
    site.wait_progress(job, "completed")
    site.wait("Slurm to finish the job", lambda: scontrol(slurm_id).get("JobState")
              == "COMPLETED", 60, job)


# -- cancel: scancel, and the job ends cancelled -------------------------------------------------


def test_cancel_while_training_in_slurm_scancels_and_ends_cancelled(slurm_site: Site) -> None:
    site = slurm_site
    job = site.drop("cancel-in-slurm.yaml", long_job())
    site.wait_training(job, min_epoch=1, timeout=JOB_TIMEOUT_S)
    slurm_id = slurm_record(site, job)["slurm_job_id"]
    site.cancel(job)
    result = site.wait_result(job, 60)
    assert result["state"] == "cancelled", site.explain(job)
    site.wait_progress(job, "cancelled")
    assert site.versions(job) == []
    site.wait("Slurm to show the job cancelled",
              lambda: scontrol(slurm_id).get("JobState") == "CANCELLED", 60, job)


# -- scontrol requeue mid-training: the same Slurm job and attempt resume from the checkpoint ---


def test_scontrol_requeue_resumes_from_the_checkpoint(slurm_site: Site) -> None:
    site = slurm_site
    job = site.drop("requeued.yaml", long_job(epochs=12))
    before = site.wait_training(job, min_epoch=3, timeout=JOB_TIMEOUT_S)
    slurm_id = slurm_record(site, job)["slurm_job_id"]
    subprocess.run(["scontrol", "requeue", slurm_id], check=True, timeout=30)
    # Slurm holds a requeued batch job back for about two minutes (reason BeginTime); the
    # daemon shows that as queued. Then let it start now rather than wait.
    pending = site.wait("the requeued job to show as pending in Slurm",
                        lambda: "PENDING" in (site.progress(job).get("message") or "")
                        and site.progress(job), 60, job)
    assert pending["state"] == "queued"
    subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"], check=True,
                   timeout=30)

    result = site.wait_result(job, JOB_TIMEOUT_S)
    assert result["state"] == "completed", site.explain(job)
    assert result["attempt"] == 1  # a requeue is not a new attempt
    events = site.events(job)
    assert any(e.get("state") == "queued" and "stopped by Slurm" in (e.get("message") or "")
               for e in events), site.explain(job)  # checkpointed at the next batch
    resumed = [e for e in events if e.get("type") == "state"
               and e.get("state") == "running" and e.get("resumed_from_epoch")]
    # The checkpoint is taken mid-epoch: it records the epochs finished before it.
    assert resumed and resumed[0]["resumed_from_epoch"] >= before["epoch"] - 1, site.explain(job)
    # The log says where it picked up; a requeue stays attempt 1.
    line = f"resumed from checkpoint at epoch {resumed[0]['resumed_from_epoch'] + 1} of "
    assert [ln for ln in site.log(job).splitlines()
            if ln.startswith(line) and ln.endswith("(attempt 1)")], site.log(job)
    assert scontrol(slurm_id).get("Restarts") == "1"
    assert submitted_slurm_jobs(site, job) == [slurm_id]
    assert sorted(p.name for p in (site.job_dir(job) / "attempts").glob("*.claim")) == [
        "1.claim"]
    assert len(site.versions(job)) == 1


# -- the submitting daemon dies; another adopts its running Slurm job ---------------------------


def test_a_new_daemon_adopts_the_running_slurm_job_of_a_killed_one(site: Site) -> None:
    first = site.daemon("slurm-first", args=slurm_args(), env=SLURM_ENV).wait_ready()
    # Far longer than the 5 s fence even on an idle machine (~0.12 s an epoch): a job that ends
    # within the fence after the kill may rightly publish before it would have paused.
    job = site.drop("adopted.yaml", long_job(epochs=150))
    site.wait_training(job, min_epoch=2, timeout=JOB_TIMEOUT_S)
    slurm_id = slurm_record(site, job)["slurm_job_id"]
    first.kill()  # SIGKILL: no hand-back, no goodbye
    # Longer than the lease's 5 s: the Slurm job pauses (in training, or before publishing if
    # it got that far); and longer than the 10 s a lost attempt waits for its adopter, which
    # must count from the reclaim, not from the pause.
    site.wait("the Slurm job to pause", lambda: "paused:" in site.log(job), 60, job)
    time.sleep(12)

    site.daemon("slurm-second", args=slurm_args(), env=SLURM_ENV).wait_ready()
    result = site.wait_result(job, JOB_TIMEOUT_S)
    assert result["state"] == "completed", site.explain(job)
    assert result["attempt"] == 2 and result["daemon"] == "slurm-second"
    record = slurm_record(site, job)
    assert record["slurm_job_id"] == slurm_id and record["adopted_by"] == "slurm-second"
    assert submitted_slurm_jobs(site, job) == [slurm_id]  # one Slurm job, never a second
    end = site.attempt_end(job, 1)
    assert end is not None and end["counts"] is False and "adopted" in end["reason"]
    assert len(site.versions(job)) == 1
    log = site.log(job)
    assert f"adopted Slurm job {slurm_id}" in log and "resumed: the lease is renewed" in log
