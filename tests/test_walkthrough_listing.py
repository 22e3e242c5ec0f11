"""``ls`` and ``show`` as a user meets them (issue 18): a wrong spool path, the attempt after a
retry, priority and queue position, filters, the summary line, colour and width on a terminal,
and escape sequences planted in a shared spool.

Job folders are made through the spool API (accepted without validation, claimed, ended), so no
daemon and no training are needed: every check is the CLI run as a subprocess from the user's
folder, reading what it prints and its exit status.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from ktrdr_daemon import atomic
from ktrdr_daemon import spool as sp
from tests.walkthrough import CLI, Said, User

EVIL = "\x1b]0;pwned\x07\x1b[2J"


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "FSYNC", False)  # this process's setup only; the CLI reads


def accept(spool: sp.Spool, job_id: str, body: str) -> None:
    """A drop accepted without validation, as a daemon would (never trained)."""
    drop = spool.incoming / f"{job_id}.yaml"
    drop.write_bytes(body.encode())
    assert sp.accept_drop(spool, drop, None) == job_id


def on_terminal(user: User, *args: str, env: dict[str, str] | None = None) -> Said:
    """``ktrdr-daemon ARGS...`` with its stdout on a pseudo-terminal, as in a shell window."""
    master, slave = os.openpty()
    proc = subprocess.Popen([*CLI, *args], cwd=user.home, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, text=True,
                            env={**user.env, **(env or {})})
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(60)
    return Said(proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), err)


def test_a_wrong_spool_path_is_an_error_and_an_empty_spool_lists_no_jobs(tmp_path: Path) -> None:
    user = User(tmp_path)
    wrong = user.run("ls", "--spool", str(tmp_path / "no" / "such" / "dir"))
    assert wrong.rc == 1 and wrong.out == ""
    assert f"no spool at {tmp_path / 'no' / 'such' / 'dir'}" in wrong.err
    assert "--spool" in wrong.err and "KTRDR_SPOOL" in wrong.err
    assert "ktrdr-daemon doctor --fix" in wrong.err
    shown = user.run("show", "anything", env={"KTRDR_SPOOL": str(tmp_path / "nope")})
    assert shown.rc == 1 and f"no spool at {tmp_path / 'nope'}" in shown.err
    sp.Spool(tmp_path / "spool").ensure_layout()  # ./spool, the default: empty
    empty = user.run("ls")
    assert (empty.rc, empty.out, empty.err) == (0, "no jobs\n", "")


@pytest.fixture
def busy(tmp_path: Path) -> tuple[User, sp.Spool]:
    """A spool with history, one running job and a queue whose order priority decides:
    ``old`` completed (3 days ago), ``crashed`` failed on attempt 1, ``training`` running,
    queued ``first`` (p0), ``urgent`` (p5, submitted after it), ``second`` (p0, group sweep),
    ``third`` (p5, group sweep) and a drop not accepted yet."""
    user = User(tmp_path)
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    me = sp.DaemonIdentity.current("gpu-box")
    accept(spool, "old", "strategy: rsi_minimal.yaml\n")
    claim = sp.try_claim(spool, "old", me)
    assert claim is not None and sp.write_result(spool, "old", "completed", claim)
    days_ago = time.time() - 3 * 86400
    os.utime(spool.job_dir("old") / sp.JOB, (days_ago, days_ago))
    accept(spool, "crashed", "strategy: rsi_minimal.yaml\ngroup: sweep\n")
    claim = sp.try_claim(spool, "crashed", me)
    long_error = "crashed.yaml: " + " ".join(f"problem-{i}" for i in range(40))
    assert claim is not None and sp.write_result(spool, "crashed", "failed", claim,
                                                 error={"message": long_error, "where": "t"})
    accept(spool, "training", "strategy: multi_indicator.yaml\npriority: 1\n")
    assert sp.try_claim(spool, "training", me) is not None
    accept(spool, "first", "strategy: rsi_minimal.yaml\n")
    accept(spool, "urgent", "strategy: rsi_minimal.yaml\npriority: 5\n")
    accept(spool, "second", "strategy: lstm_momentum.yaml\ngroup: sweep\n")
    accept(spool, "third", "strategy: rsi_minimal.yaml\npriority: 5\ngroup: sweep\n")
    (spool.incoming / "dropped.yaml").write_text("strategy: rsi_minimal.yaml\npriority: 9\n")
    return user, spool


def test_ls_lists_the_queue_in_claim_order_with_priority_position_and_a_summary(busy) -> None:
    user, spool = busy
    table = user.run("ls")
    assert table.rc == 0 and table.err == ""
    lines = table.out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "PRI", "POS", "PROGRESS", "DEVICE", "ATTEMPT",
                                "AGE", "NOTE"]
    cells = {line.split()[0]: line.split() for line in lines[1:-1]}
    # history, then what runs, then the queue as daemons claim it (p5 before p0), then drops
    assert list(cells) == ["old", "crashed", "training", "urgent", "third", "first", "second",
                           "dropped"]
    assert [cells[i][2:4] for i in ("urgent", "third", "first", "second")] == [
        ["5", "1"], ["5", "2"], ["0", "3"], ["0", "4"]]
    assert sp.queued_jobs_in_order(spool) == ["urgent", "third", "first", "second"]  # daemons
    assert cells["training"][1:4] == ["running", "1", "-"] and "on gpu-box" in lines[3]
    assert cells["dropped"][2:4] == ["9", "-"] and "waiting for a daemon" in lines[-2]
    assert lines[-1] == "8 jobs: 5 queued, 1 running, 1 completed, 1 failed"
    assert "problem-39" in table.out  # not a terminal: the whole error, on one line
    assert "\x1b" not in table.out  # not a terminal: no colour

    rows = {r["id"]: r for r in json.loads(user.run("ls", "--json").out)}
    assert {i: (r["priority"], r["queue_position"]) for i, r in rows.items()} == {
        "old": (0, None), "crashed": (0, None), "training": (1, None), "urgent": (5, 1),
        "third": (5, 2), "first": (0, 3), "second": (0, 4), "dropped": (9, None)}
    assert rows["second"]["strategy"] == "lstm_momentum" and rows["second"]["group"] == "sweep"


def test_after_retry_ls_and_show_say_the_new_attempt(busy) -> None:
    user, _ = busy
    retried = user.run("retry", "crashed")
    assert retried.rc == 0 and "crashed: queued again as attempt 2" in retried.out
    row = next(r for r in json.loads(user.run("ls", "--json").out) if r["id"] == "crashed")
    assert (row["state"], row["attempt"]) == ("queued", 2)
    assert row["queue_position"] == 3  # after the p5 ones; before "first" (FIFO among p0)
    table = user.run("ls", "--state", "queued").out
    assert re.search(r"^crashed +queued +0 +3 +0\.0% +- +2 ", table, re.M), table
    shown = user.run("show", "crashed")
    assert shown.rc == 0
    assert shown.out.startswith("job crashed: queued, attempt 2, priority 0, position 3 in")
    assert json.loads(user.run("show", "crashed", "--json").out)["attempt"] == 2


def test_ls_filters_by_states_strategy_group_and_age(busy) -> None:
    user, _ = busy

    def ids(*args: str) -> list[str]:
        said = user.run("ls", "--json", *args)
        assert said.rc == 0, said.err
        return [r["id"] for r in json.loads(said.out)]

    assert ids("--state", "running,failed") == ["crashed", "training"]
    assert ids("--state", "completed", "--state", "running") == ["old", "training"]
    assert ids("--group", "sweep") == ["crashed", "third", "second"]
    assert ids("--group", "sweep", "--strategy", "rsi_minimal", "--state", "queued") == ["third"]
    assert ids("--strategy", "multi_indicator,lstm_momentum") == ["training", "second"]
    assert "old" not in ids("--since", "1d") and "old" in ids("--since", "4d")
    assert len(ids("--since", "2000-01-01T00:00")) == 8  # a date: everything since
    text = user.run("ls", "--group", "sweep", "--state", "queued")
    assert text.out.splitlines()[-1] == "2 jobs matching: 2 queued"
    none = user.run("ls", "--group", "nosuch")
    assert (none.rc, none.out) == (0, "no jobs match --group nosuch\n")
    bad = user.run("ls", "--state", "queued,finished")
    assert bad.rc == 64 and "'finished': not a state" in bad.err
    bad = user.run("ls", "--since", "yesterday")
    assert bad.rc == 64 and "neither an age" in bad.err


def test_ls_on_a_terminal_colours_states_and_fits_notes_to_its_width(busy) -> None:
    user, _ = busy
    shown = on_terminal(user, "ls", env={"COLUMNS": "100"})
    assert shown.rc == 0, shown.err
    assert "\x1b[31mfailed" in shown.out and "\x1b[36mrunning" in shown.out
    crashed = next(line for line in shown.out.splitlines() if line.startswith("crashed"))
    visible = re.sub(r"\x1b\[[0-9;]*m", "", crashed)
    assert len(visible) == 100 and visible.endswith("…") and "problem-39" not in visible
    plain = on_terminal(user, "ls", env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert plain.rc == 0 and "\x1b" not in plain.out and "crashed" in plain.out
    forced = user.run("ls", "--color", "always")
    assert "\x1b[33mqueued" in forced.out


def test_text_from_the_spool_never_reaches_the_terminal_as_escapes(tmp_path: Path) -> None:
    user = User(tmp_path)
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    accept(spool, "rejected", f"strategy: x.yaml\ntitle: {EVIL}\n")  # the loader refuses it
    accept(spool, "noisy", "strategy: x.yaml\n")
    sp.write_result(spool, "noisy", "failed", error={"message": f"boom {EVIL}", "where": "t"})
    (spool.job_dir("noisy") / "log.txt").write_text(f"1. Loading data {EVIL}\n\x9b2J\u202eevil\n")
    (spool.incoming / f"drop{EVIL[:5]}.yaml").write_text("strategy: x.yaml\n")

    shown = user.run("show", "rejected")
    assert shown.rc == 0 and "dropped file (not accepted):" in shown.out
    assert "title: \\x1b]0;pwned\\x07\\x1b[2J" in shown.out  # visible, not obeyed
    noisy = user.run("show", "noisy")
    assert "1. Loading data \\x1b]0;pwned\\x07\\x1b[2J" in noisy.out
    assert "\\x9b2J\\u202eevil" in noisy.out
    listing = user.run("ls")
    assert "boom \\x1b]0;pwned\\x07\\x1b[2J" in listing.out and "drop\\x1b]0;p" in listing.out
    tail = user.run("tail", "noisy")
    assert tail.rc == 1 and "1. Loading data \\x1b]0;pwned" in tail.out
    # A heartbeat file is spool text too (a dead daemon on another host, as written there).
    (spool.daemons / "far.json").write_text(json.dumps({
        "id": "far", "host": f"elsewhere{EVIL}", "pid": 1, "device": "cpu", "slots": 1,
        "free_slots": 1, "beat": 1, "updated_at": "2026-01-01T00:00:00Z"}))
    daemons = user.run("daemons", "--no-wait")
    assert daemons.rc == 0 and "elsewhere\\x1b]" in daemons.out, daemons.text
    for said in (shown, noisy, listing, tail, daemons):
        for unsafe in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert unsafe not in said.out + said.err


def test_job_lines_read_what_the_yaml_loader_reads_or_decline(tmp_path: Path) -> None:
    """The fast readers behind ``ls`` and the queue order give the safe loader's values for
    the lines the dumper writes, and decline (None: YAML decides) every other form."""
    from ktrdr_daemon.job_lines import job_tags, plain_header
    from pipeline import safe_yaml

    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    accept(spool, "real", "strategy: rsi_minimal.yaml\npriority: -2\ngroup: sweep-7\n"
                          "execution: {max_attempts: 5, wait_for_gpu: 2.5, require_gpu: true}\n")
    header = (spool.job_dir("real") / sp.JOB).read_bytes().split(b"\n")[:10]
    assert plain_header(header) == safe_yaml.load(b"\n".join(header))
    assert sp.read_job_header(spool, "real")["execution"]["wait_for_gpu"] == 2.5
    for value in ("12056df3b2000c3f", "'x: y'", "0", "-7", "1.25", "false", "rsi_minimal.yaml"):
        lines = [f"id: {value}".encode(), b"nested:", f"  key: {value}".encode()]
        assert plain_header(lines) == safe_yaml.load(b"\n".join(lines)), value
    for odd in ("010", "0b11", "True", "2026-12-01", "1e3x # c", "{a: 1}", "[1]", "~", "'it''s'",
                ".inf", "1:20", "null", "yes"):
        assert plain_header([f"id: {odd}".encode()]) is None, odd
    assert plain_header([b"id: x", b"   deeper: 1"]) is None
    assert plain_header([b"  orphan: 1"]) is None
    tags = job_tags(b"id: a\nstrategy: sub/rsi_minimal.yml\npriority: 3\ngroup: 'g 1'\n")
    assert tags == {"priority": 3, "strategy": "rsi_minimal", "group": "g 1"}
    assert job_tags(b"name: my_v3\npriority: nope\n") == {
        "priority": 0, "strategy": "my_v3", "group": None}


def test_a_listing_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`ktrdr-daemon ls --json | head -c 200`: the reader closes the pipe early; the command
    must end without a BrokenPipeError traceback on the user's screen."""
    user = User(tmp_path)
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    for i in range(400):  # ~170 kB of JSON: more than a pipe holds
        accept(spool, f"job{i:04d}", "strategy: x.yaml\n")
    proc = subprocess.Popen([*CLI, "ls", "--json"], cwd=user.home, env=user.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(200).startswith(b"[")
    proc.stdout.close()  # what head does once it has its bytes
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
