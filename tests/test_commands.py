"""The reading and steering commands, as a user runs them: real CLI subprocesses against a real
spool served by a real daemon (``run``), plus synthetic job folders where no training is needed.

One daemon serves the whole module (it takes seconds to start): the tests that use it run in
file order and the last one SIGKILLs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ktrdr_daemon import atomic
from ktrdr_daemon import spool as sp
from ktrdr_daemon.commands import parse_duration
from ktrdr_daemon.tailing import sparkline

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ktrdr_daemon.cli"]


def cli(*args: str, spool: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--spool", str(spool)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def cli_bg(*args: str, spool: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args, "--spool", str(spool)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cli_many(*commands: tuple[str, ...], spool: Path) -> list[tuple[int, str, str]]:
    """Several commands at once (each CLI start costs a second or more): (rc, stdout, stderr)."""
    procs = [cli_bg(*args, spool=spool) for args in commands]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


def accept_synthetic(spool: sp.Spool, job_id: str, body: bytes = b"strategy: x.yaml\n") -> None:
    """An accepted job folder through the spool API, without validation (never trained)."""
    drop = spool.incoming / f"{job_id}.yaml"
    drop.write_bytes(body)
    assert sp.accept_drop(spool, drop, None) == job_id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A spool with a cancelled synthetic job, three submitted jobs and a daemon serving it."""
    base = tmp_path_factory.mktemp("served")
    spool_root, models = base / "spool", base / "models"
    spool = sp.Spool(spool_root)
    spool.ensure_layout()
    accept_synthetic(spool, "victim")
    cancel = cli("cancel", "victim", spool=spool_root)
    jobs = {
        "slow": "strategy: rsi_minimal.yaml\nseed: 7\noverrides: {training: {epochs: 40}}\n",
        "done": "strategy: rsi_minimal.yaml\nseed: 7\noverrides: {training: {epochs: 2}}\n",
        "bad": "strategy: rsi_minimal.yaml\nsymbols: [NOPE]\nseed: 7\n"
               "overrides: {training: {epochs: 2}}\n",
    }
    for name, text in jobs.items():
        (base / f"{name}.yaml").write_text(text)
    submit = cli("submit", *(str(base / f"{n}.yaml") for n in ("slow", "done", "bad")),
                 spool=spool_root)
    assert submit.returncode == 0, submit.stderr
    assert submit.stdout.split() == ["slow", "done", "bad"]
    submitted = json.loads(cli("ls", "--json", spool=spool_root).stdout)  # before any daemon
    assert {(r["id"], r["state"], r["accepted"]) for r in submitted} == {
        ("victim", "cancelled", True), ("slow", "queued", False), ("done", "queued", False),
        ("bad", "queued", False)}
    daemon_id = f"test-commands-{os.getpid()}"
    log = open(base / "daemon.log", "w")  # noqa: SIM115
    daemon = subprocess.Popen(
        [*CLI, "run", "--spool", str(spool_root), "--models", str(models), "--daemon-id",
         daemon_id, "--device", "cpu"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    yield {"spool": spool_root, "models": models, "daemon": daemon, "id": daemon_id,
           "cancel": cancel, "log": base / "daemon.log"}
    if daemon.poll() is None:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    else:  # SIGKILLed by a test: end its fork server too (its group), if still there
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
    log.close()


def test_cancel_queued_job_ends_it_at_once_and_tail_exits_2(served) -> None:
    assert served["cancel"].returncode == 0, served["cancel"].stderr
    assert "victim: cancelled" in served["cancel"].stdout
    tail = cli("tail", "victim", spool=served["spool"])
    assert tail.returncode == 2, tail.stdout + tail.stderr
    assert "cancelled" in tail.stdout
    again = cli("cancel", "victim", spool=served["spool"])
    assert again.returncode == 1 and "already cancelled" in again.stderr


def test_tail_follows_a_job_from_queued_to_completed(served) -> None:
    spool = served["spool"]
    streamed = cli_bg("tail", "slow", "--json", spool=spool)
    text = cli_bg("tail", "slow", spool=spool)
    out, err = streamed.communicate(timeout=150)
    assert streamed.returncode == 0, err
    snapshots = [json.loads(line) for line in out.splitlines()]
    states = [s["state"] for s in snapshots]
    assert states[0] == "queued" and states[-1] == "completed"
    assert "running" in states
    epochs = [s["epoch"] for s in snapshots if s["epoch"] is not None]
    assert len(set(epochs)) > 3 and epochs == sorted(epochs)  # watched it train, in order
    assert snapshots[-1]["percent"] == 100.0 and snapshots[-1]["model_path"]
    out, err = text.communicate(timeout=60)
    assert text.returncode == 0, err
    assert "8. Training model: 40 epochs" in out and "epoch 40/40" in out
    assert "completed: " in out.splitlines()[-1]
    assert "[completed]" in out


def test_tail_exit_status_completed_and_failed(served) -> None:
    spool = served["spool"]
    done, bad = cli_bg("tail", "done", spool=spool), cli_bg("tail", "bad", "--json", spool=spool)
    out, _ = done.communicate(timeout=120)
    assert done.returncode == 0, out
    out, _ = bad.communicate(timeout=120)
    assert bad.returncode == 1
    last = json.loads(out.splitlines()[-1])
    assert last["state"] == "failed" and "NOPE" in last["error"]["message"]
    assert last["error"]["message"].startswith("bad.yaml: ")  # names the file, as users drop many


def test_ls_and_show(served) -> None:
    (_, ls_json, _), (_, failed, _), (_, table, _), (_, shown, _), (_, text, _) = cli_many(
        ("ls", "--json"), ("ls", "--state", "failed", "--json"), ("ls",),
        ("show", "done", "--json"), ("show", "bad"), spool=served["spool"])
    rows = {r["id"]: r for r in json.loads(ls_json)}
    assert {k: r["state"] for k, r in rows.items()} == {
        "slow": "completed", "done": "completed", "bad": "failed", "victim": "cancelled"}
    assert rows["done"]["percent"] == 100.0 and rows["done"]["device"] == "cpu"
    assert rows["done"]["attempt"] == 1 and rows["done"]["age_seconds"] >= 0
    assert "NOPE" in rows["bad"]["error"]
    assert [r["id"] for r in json.loads(failed)] == ["bad"]
    table = table.splitlines()
    assert table[0].split()[:8] == ["ID", "STATE", "PRI", "POS", "PROGRESS", "DEVICE", "ATTEMPT",
                                    "AGE"]
    assert any(line.split()[:5] == ["done", "completed", "0", "-", "100.0%"] for line in table)

    shown = json.loads(shown)
    assert shown["state"] == "completed" and shown["job"]["seed"] == 7
    assert shown["job"]["strategy_name"] == "rsi_minimal"
    assert shown["progress"]["epochs"] == 2
    assert Path(shown["result"]["model_path"]).is_dir()
    assert shown["log_tail"][-1] == "[completed]" and len(shown["log_tail"]) == 20
    assert "job bad: failed" in text and "spec (job.yaml)" in text and "NOPE" in text


def test_unknown_ids_are_refused_with_similar_ones(served) -> None:
    commands = [(c, "dnoe") for c in ("tail", "show", "cancel", "retry")]
    *unknown, (rc, _, err) = cli_many(*commands, ("show", "../etc"), spool=served["spool"])
    for rc_unknown, _, err_unknown in unknown:
        assert rc_unknown == 1
        assert "no job 'dnoe'" in err_unknown and "similar: done" in err_unknown
    assert rc == 1 and "not a job id" in err


def test_retry_requeues_a_failed_job_as_a_new_attempt(served) -> None:
    spool = served["spool"]
    refused = cli("retry", "done", spool=spool)
    assert refused.returncode == 1 and "completed" in refused.stderr
    retried = cli("retry", "bad", spool=spool)
    assert retried.returncode == 0 and "bad: queued again as attempt 2" in retried.stdout
    tail = cli("tail", "bad", spool=spool)  # the daemon runs it again; it fails again
    assert tail.returncode == 1
    shown = json.loads(cli("show", "bad", "--json", spool=spool).stdout)
    assert shown["state"] == "failed" and shown["result"]["attempt"] == 2
    assert "[retry] queued again as attempt 2" in "\n".join(shown["log_tail"])


def test_daemons_alive_then_dead_after_sigkill(served) -> None:
    spool, daemon = served["spool"], served["daemon"]

    def me_now() -> dict:
        rows = json.loads(cli("daemons", "--json", spool=spool).stdout)
        (me,) = [r for r in rows if r["id"] == served["id"]]
        return me

    # The counters travel in the heartbeat, written every heartbeat_seconds: the second
    # completion (slow's, which the tests above waited for) shows at the next beat after the
    # daemon reaps it, so look again until it is there (a hang guard, not a timing check).
    deadline = time.monotonic() + 60
    while (me := me_now())["counters"].get("completed") != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert me["status"] == "alive" and me["device"] == "cpu" and me["pid"] == daemon.pid
    assert me["slots"] == 1 and me["heartbeat_age_seconds"] < 10
    assert me["counters"]["completed"] == 2
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait(10)
    rows = json.loads(cli("daemons", "--json", spool=spool).stdout)
    (me,) = [r for r in rows if r["id"] == served["id"]]
    assert me["status"] == "dead" and "is gone" in me["dead_reason"]
    text = cli("daemons", spool=spool).stdout
    assert served["id"] in text and " dead " in text


def test_clean_removes_only_old_finished_jobs(tmp_path: Path) -> None:
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    models = tmp_path / "models" / "rsi_minimal" / "1h_v1"
    models.mkdir(parents=True)
    week_ago = time.time() - 8 * 86400
    for job_id in ("old_done", "old_failed", "new_done", "old_queued"):
        accept_synthetic(spool, job_id)
    sp.write_result(spool, "old_done", "completed", model_path=str(models))
    sp.write_result(spool, "old_failed", "failed", error={"message": "x", "where": "test"})
    sp.write_result(spool, "new_done", "completed")
    for job_id in ("old_done", "old_failed", "old_queued"):
        for path in (spool.job_dir(job_id), *spool.job_dir(job_id).iterdir()):
            os.utime(path, (week_ago, week_ago))
    result = cli("clean", "--older-than", "7d", spool=spool.root)
    assert result.returncode == 0, result.stderr
    assert sorted(line.split()[1] for line in result.stdout.splitlines()[:-1]) == [
        "old_done", "old_failed"]
    assert sorted(p.name for p in spool.jobs.iterdir()) == ["new_done", "old_queued"]
    assert models.is_dir()
    bad = cli("clean", "--older-than", "7 days", spool=spool.root)
    assert bad.returncode == 64 and "not a duration" in bad.stderr  # usage, not "cancelled"


def test_ls_reads_synthetic_queued_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "FSYNC", False)  # only this process's setup; the CLI reads
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    for i in range(200):
        accept_synthetic(spool, f"q{i:03d}")
    started = time.monotonic()
    result = cli("ls", "--json", "--state", "queued", spool=spool.root)
    elapsed = time.monotonic() - started
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == [f"q{i:03d}" for i in range(200)]  # oldest first
    assert {(r["state"], r["percent"], r["attempt"], r["accepted"]) for r in rows} == {
        ("queued", 0.0, 0, True)}
    assert elapsed < 30
    assert json.loads(cli("ls", "--json", "--state", "running", spool=spool.root).stdout) == []


def test_doctor_reports_watcher_device_and_folders(tmp_path: Path) -> None:
    spool, models = tmp_path / "spool", tmp_path / "models"
    good, bad = (subprocess.Popen([*CLI, "doctor", *args, "--spool", str(spool), "--models",
                                   str(models)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for args in (("--json", "--fix", "--device", "cpu"), ("--device", "nope")))
    out, err = good.communicate(timeout=120)
    assert good.returncode == 0, out + err
    checks = {c["name"]: c for c in json.loads(out)}
    assert {"spool", "models", "watcher", "device", "torch", "daemons", "disk"} <= set(checks)
    assert checks["spool"]["status"] == "ok" and "(created)" in checks["spool"]["detail"]
    assert (spool / "incoming").is_dir() and models.is_dir()
    assert checks["watcher"]["detail"].startswith("inotify")
    assert checks["device"]["detail"].startswith("cpu")
    assert checks["daemons"]["status"] == "warn"  # nobody serves this fresh spool
    out, _ = bad.communicate(timeout=120)
    assert bad.returncode == 1 and "fail  device" in out


def test_small_helpers() -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration("1d12h") == 36 * 3600
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    line = sparkline([1.0, 0.9, 0.8, 0.7, 0.6])
    assert line[0] == "█" and line[-1] == "▁" and len(line) == 5
    assert sparkline([1.0, 1.0]) == "▅▅" and sparkline([]) == ""
