"""Steering many jobs, as a user types it (issue 18): settings mistakes refused in one line,
``cancel``/``retry`` by state, ``wait``, ``--version``, shell completion and ``submit --set
--priority --seeds``. Every command runs as a subprocess (tests/walkthrough.py); the jobs are
synthetic folders made through the spool API, so no daemon is needed.
"""

from __future__ import annotations

import json
import os
import re
import select
import tomllib
from pathlib import Path

import pytest
import yaml

from ktrdr_daemon import spool as sp
from ktrdr_daemon.settings import load_settings
from ktrdr_daemon.validate import validate_job
from tests.walkthrough import ROOT, User


@pytest.fixture
def user(tmp_path: Path) -> User:
    return User(tmp_path / "home")


def spool_of(user: User) -> sp.Spool:
    spool = sp.Spool(user.home / "spool")
    spool.ensure_layout()
    return spool


def accept(spool: sp.Spool, *job_ids: str) -> None:
    """Queued job folders, accepted without validation (never trained)."""
    for job_id in job_ids:
        drop = spool.incoming / f"{job_id}.yaml"
        drop.write_bytes(b"strategy: rsi_minimal.yaml\n")
        assert sp.accept_drop(spool, drop, None) == job_id


def states(spool: sp.Spool, *job_ids: str) -> dict[str, str]:
    return {j: sp.job_state(spool, j) for j in job_ids}


def read_line(stream, timeout: float = 60) -> str:
    """The next line a running command prints (a hang guard, not a speed check)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing printed in {timeout} s"
    return stream.readline()


# --- settings ---------------------------------------------------------------------------------


def test_bad_settings_are_refused_in_one_line_naming_where_they_came_from(user: User) -> None:
    config = user.write("my-daemon.yaml", "threads: 0\n")
    cases = [  # (argv, env, what the line must name)
        (["run", "--slots", "0"], {}, ["slots", "'0'", "--slots", ">= 1"]),
        (["run", "--slots", "-1"], {}, ["slots", "'-1'", "--slots", ">= 1"]),
        (["run"], {"KTRDR_SLOTS": "abc"}, ["slots", "'abc'", "KTRDR_SLOTS", "integer >= 1"]),
        (["run"], {"KTRDR_CONFIG": str(config)}, ["threads", str(config), ">= 1"]),
        (["train", "job.yaml", "--threads", "two"], {}, ["threads", "--threads"]),
        (["ls"], {"KTRDR_HEARTBEAT_SECONDS": "0"}, ["heartbeat_seconds", "> 0"]),
        (["daemons"], {"KTRDR_EXPIRE_SECONDS": "nan"}, ["expire_seconds", "KTRDR_EXPIRE"]),
        (["ls"], {"KTRDR_OBSERVER": "inotfy"}, ["observer", "auto, inotify, polling"]),
    ]
    for argv, env, words in cases:
        said = user.run(*argv, env=env, timeout=60)  # a daemon that starts would time out
        assert said.rc == 64, (argv, env, said)
        assert "Traceback" not in said.text, said.err
        lines = said.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), said.err
        for word in words:
            assert word in lines[0], (word, lines[0])
    assert not (user.home / "spool").exists()  # refused before anything was created


# --- cancel and retry on many jobs -----------------------------------------------------------


def test_cancel_and_retry_by_state_or_all(user: User) -> None:
    spool = spool_of(user)
    accept(spool, "q1", "q2", "q3", "run1", "f1", "done")
    sp.write_result(spool, "f1", "failed", error={"message": "boom", "where": "test"})
    sp.write_result(spool, "done", "completed")
    me = sp.DaemonIdentity.current("steering-test")
    assert sp.try_claim(spool, "run1", me) is not None  # this process runs it: alive

    bare = user.run("cancel")
    assert bare.rc == 64 and "give job IDs, --state queued|running or --all" in bare.err
    both = user.run("retry", "f1", "--all")
    assert both.rc == 64 and "not both" in both.err
    nowhere = user.run("cancel", "--all", "--spool", "nowhere")  # not "no jobs": a typo
    assert nowhere.rc == 1 and "nowhere/jobs does not exist (wrong --spool?)" in nowhere.err
    wrong = user.run("retry", "--state", "queued")  # argparse: not a state retry acts on
    assert wrong.rc == 64 and "invalid choice" in wrong.err  # usage, not "cancelled"

    queued = user.run("cancel", "--state", "queued")
    assert queued.rc == 0, queued.err
    assert queued.out.splitlines() == [
        "q1: cancelled (it was queued; it will not start)",
        "q2: cancelled (it was queued; it will not start)",
        "q3: cancelled (it was queued; it will not start)",
        "3 jobs: 3 cancelled"]
    running = user.run("cancel", "--state", "running")
    assert running.rc == 0 and running.out.startswith("run1: cancel requested"), running
    assert running.out.splitlines()[-1] == "1 job: 1 cancel requested (running)"
    assert sp.is_cancel_requested(spool, "run1") and sp.job_state(spool, "run1") == "running"
    assert states(spool, "q1", "q2", "q3", "f1", "done") == {
        "q1": "cancelled", "q2": "cancelled", "q3": "cancelled", "f1": "failed",
        "done": "completed"}

    failed = user.run("retry", "--state", "failed")
    assert failed.rc == 0 and failed.out.splitlines() == [
        "f1: queued again as attempt 1", "1 job: 1 requeued"], failed
    everything = user.run("retry", "--all")
    assert everything.rc == 0, everything.err
    assert everything.out.splitlines()[-1] == "3 jobs: 3 requeued"
    assert states(spool, "q1", "q2", "q3", "f1", "done") == {
        "q1": "queued", "q2": "queued", "q3": "queued", "f1": "queued", "done": "completed"}
    nothing = user.run("retry", "--all")
    assert nothing.rc == 0 and nothing.out.strip() == (
        "no failed or cancelled jobs; nothing to retry")

    named = user.run("cancel", "q1", "done", "nosuch")  # IDs: each problem is an error
    assert named.rc == 1
    assert named.out.splitlines() == ["q1: cancelled (it was queued; it will not start)",
                                      "3 jobs: 1 cancelled, 1 already completed, 1 unknown"]
    assert "done: already completed" in named.err and "no job 'nosuch'" in named.err


# --- wait -------------------------------------------------------------------------------------


def test_wait_reports_each_end_and_exits_by_the_worst(user: User) -> None:
    spool = spool_of(user)
    accept(spool, "w1", "w2", "w3", "fx")
    sp.write_result(spool, "fx", "failed", error={"message": "no data for NOPE\nmore",
                                                  "where": "test"})
    proc = user.start("wait", "w1", "w2")
    try:
        assert "waiting for 2 jobs" in read_line(proc.stderr)
        sp.write_result(spool, "w1", "completed", model_path="/models/x/1h_v1")
        assert read_line(proc.stdout) == "w1: completed  model /models/x/1h_v1\n"
        assert proc.poll() is None  # w2 is still queued: it goes on waiting
        cancel = user.run("cancel", "w2")
        assert cancel.rc == 0, cancel.err
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (out, err)  # one cancelled, none failed
    assert out.splitlines() == ["w2: cancelled", "2 jobs ended: 1 cancelled, 1 completed"]

    done = user.run("wait", "w1")  # ended already: said at once
    assert done.rc == 0 and done.out == "w1: completed  model /models/x/1h_v1\n"
    failed = user.run("wait", "w1", "fx")
    assert failed.rc == 1 and "fx: failed: no data for NOPE\n" in failed.out
    unknown = user.run("wait", "w1", "nosuch")
    assert unknown.rc == 1 and "no job 'nosuch'" in unknown.err and unknown.out == ""

    waiting = user.start("wait", "w3")
    assert "Ctrl-C stops waiting" in read_line(waiting.stderr)
    stopped = User.interrupt(waiting)
    assert stopped.rc == 130, stopped
    assert "stopped waiting; the jobs go on (1 not ended: w3)" in stopped.err
    assert "Traceback" not in stopped.err
    assert sp.job_state(spool, "w3") == "queued"  # waiting changed nothing

    following = user.start("tail", "w3", "--json")  # tail waits for a queued job too
    assert json.loads(read_line(following.stdout))["state"] == "queued"  # following it
    stopped = User.interrupt(following)
    assert stopped.rc == 130, stopped  # what `tail --help` says
    assert "stopped following; the job goes on" in stopped.err
    assert "Traceback" not in stopped.err and sp.job_state(spool, "w3") == "queued"


def test_tail_and_wait_help_list_the_interrupt_status(user: User) -> None:
    for command in ("tail", "wait"):
        said = user.run(command, "--help")
        assert said.rc == 0 and "130" in said.out and "Ctrl-C" in said.out, said.out
    listed = " ".join(user.run("--help").out.split())  # the command list says it too
    assert listed.count("130 Ctrl-C") == 2, listed


# --- --version and completion ----------------------------------------------------------------


def test_version_and_shell_completion(user: User) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    said = user.run("--version")
    assert said.rc == 0 and said.out == f"ktrdr-daemon {version}\n"

    helped = user.run("completion", "--help")
    assert 'eval "$(ktrdr-daemon completion bash)"' in helped.out
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        code = user.run("completion", shell)
        assert code.rc == 0 and "ktrdr-daemon" in code.out and marker in code.out, (shell, code)

    # What the shell does on TAB: run the command with _ARGCOMPLETE set, read the answers.
    spool = spool_of(user)
    accept(spool, "sweep-seed1", "sweep-seed2", "other")
    (spool.incoming / "sweep-seed3.yaml").write_text("strategy: rsi_minimal.yaml\n")
    answers = user.home / "answers.txt"

    def complete(line: str) -> list[str]:
        env = {"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_STDOUT_FILENAME": str(answers), "_ARGCOMPLETE_IFS": "\n"}
        assert user.run(env=env).rc == 0
        return sorted(w.strip() for w in answers.read_text().splitlines())

    assert complete("ktrdr-daemon can") == ["cancel"]
    assert complete("ktrdr-daemon tail sw") == ["sweep-seed1", "sweep-seed2", "sweep-seed3"]
    assert complete("ktrdr-daemon cancel --st") == ["--state", "--strategies"]


# --- submit --set, --priority, --seeds ---------------------------------------------------------


def drop(user: User, job_id: str) -> dict:
    return yaml.safe_load((user.home / "spool" / "incoming" / f"{job_id}.yaml").read_text())


def test_submit_rewrites_the_drop_never_the_file(user: User) -> None:
    text = "strategy: rsi_minimal.yaml\nseed: 1\noverrides: {training: {batch_size: 16}}\n"
    job = user.write("job.yaml", text)
    said = user.run("submit", "job.yaml", "--set", "training.epochs=5", "--set", "seed=9",
                    "--set", "execution.max_attempts=2", "--priority", "3")
    assert said.rc == 0 and said.out == "job\n", said
    assert drop(user, "job") == {
        "strategy": "rsi_minimal.yaml", "seed": 9, "priority": 3,
        "overrides": {"training": {"batch_size": 16, "epochs": 5}},
        "execution": {"max_attempts": 2}}
    assert job.read_text() == text  # the user's file is untouched

    # A strategy under the strategies root is referenced by its path; seeds share a group.
    seeds = user.run("submit", "--seeds", "1-3,7", "config/strategies/rsi_minimal.yaml")
    assert seeds.rc == 0, seeds.err
    ids = seeds.out.split()
    assert ids == [f"rsi_minimal-seed{n}" for n in (1, 2, 3, 7)]
    group = re.search(r"group (rsi_minimal-[0-9a-f]{6}): 4 jobs", seeds.err)
    assert group, seeds.err
    assert [drop(user, i) for i in ids] == [
        {"strategy": "rsi_minimal.yaml", "seed": n, "group": group[1]} for n in (1, 2, 3, 7)]

    # One outside the root is inlined, so confinement holds; --group names the group.
    user.write("mine.yaml", (ROOT / "config/strategies/rsi_minimal.yaml").read_text())
    named = user.run("submit", "--seeds", "4,5", "--group", "sweep", "--set",
                     "training.epochs=3", "mine.yaml")
    assert named.rc == 0 and named.out.split() == ["mine-seed4", "mine-seed5"], named
    inlined = drop(user, "mine-seed5")
    assert inlined["strategy"]["name"] == "rsi_minimal" and inlined["group"] == "sweep"
    assert inlined["seed"] == 5 and inlined["overrides"] == {"training": {"epochs": 3}}

    # The daemon accepts the rewritten drops: job.yaml carries the seed and the group.
    spool = sp.Spool(user.home / "spool")
    settings = load_settings({"strategies": user.home / "config/strategies"}, env={},
                             config_file=Path(os.devnull))
    for job_id in ("mine-seed5", "rsi_minimal-seed7"):
        sp.accept_drop(spool, spool.incoming / f"{job_id}.yaml",
                       lambda body, source: validate_job(body, source, settings))
    for job_id, group_name, seed, epochs in (("mine-seed5", "sweep", 5, 3),
                                             ("rsi_minimal-seed7", group[1], 7, None)):
        accepted = sp.read_job(spool, job_id)
        assert sp.job_state(spool, job_id) == "queued"
        assert (accepted["group"], accepted["seed"]) == (group_name, seed)
        assert accepted["strategy"]["training"]["seed"] == seed
        if epochs:
            assert accepted["strategy"]["training"]["epochs"] == epochs


def test_submit_mistakes_publish_nothing(user: User) -> None:
    user.write("job.yaml", "strategy: rsi_minimal.yaml\n")
    user.write("grouped.yaml", "strategy: rsi_minimal.yaml\ngroup: my sweep!\n")
    for argv, rc, words in (
            (["--set", "training.epochs", "job.yaml"], 64, ["KEY=VALUE"]),
            (["--seeds", "5-1", "job.yaml"], 64, ["runs backwards"]),
            (["--seeds", "1-x", "job.yaml"], 64, ["1-3,7"]),
            (["--group", "../up", "job.yaml"], 64, ["--group", "letters, digits"]),
            (["--set", "seed=abc", "job.yaml"], 1, ["seed: expected an integer"]),
            (["grouped.yaml"], 1, ["group: 'my sweep!' is not a group name"])):
        said = user.run("submit", *argv)
        assert said.rc == rc, (argv, said)
        assert "Traceback" not in said.err
        for word in words:
            assert word in said.err, (word, said.err)
    assert list((user.home / "spool" / "incoming").iterdir()) == []

