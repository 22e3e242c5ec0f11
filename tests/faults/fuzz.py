"""Fuzzed drops into one live daemon: valid, nearly valid and hostile job and strategy files.

:func:`drops` is a hypothesis strategy for one drop: its bytes (valid jobs, jobs with one thing
wrong, v3 strategies with one thing wrong, alias bombs, deep nesting, binary, huge, UTF-16,
latin-1, BOMs), its file name (long, unicode, odd characters, wrong suffixes) and how it arrives
(renamed in, copied in place, appended line by line with `echo >>`, a symlink out of the spool,
a dangling symlink, a hard link, a FIFO, a folder named like a drop). Valid jobs train
one epoch. The promises checked (spec section 2):

- the daemon keeps running, whatever it is fed;
- every drop gets a job folder and ends with a state (a job still running after
  ``RUN_LIMIT_S``, e.g. one that validly asked for 10^12 epochs, is cancelled, and must then end
  ``cancelled``);
- every ``failed`` result has a non-empty error message that names the dropped file;
- nothing is left in ``incoming/``: every drop, of any file type, gets an outcome;
- a hard-linked drop is copied: the user's file keeps one link.

    python -m tests.faults.fuzz --drops 5000          # the long run (make faults)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .harness import RSI_MINIMAL, Daemon, Site, read_json

RUN_LIMIT_S = 60.0  # a valid job running longer than this is cancelled (no drop trains long)
OUTSTANDING = 60  # back-pressure: at most this many drops not yet ended at once
MAX_NAME_BYTES = 240  # a Linux file name is at most 255 bytes

_STRATEGY = yaml.safe_load(RSI_MINIMAL.read_text())


def _job(**changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"strategy": "rsi_minimal.yaml", "seed": 7,
                           "overrides": {"training": {"epochs": 1}}}
    job.update(changes)
    return job


_BAD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=2),
    st.sampled_from(["../../etc/passwd", "/etc/passwd", "nope.yaml", "2018-13-45", "1h", "",
                     "EURUSD", "~", "rsi_minimal.yaml/..", "%x"]),
)
_JOB_KEYS = ["strategy", "symbols", "timeframes", "start", "end", "seed", "priority",
             "execution", "overrides"]
_EXEC_KEYS = ["mode", "require_gpu", "max_attempts", "wait_for_gpu"]


@st.composite
def _nearly_valid_job(draw: st.DrawFn) -> Any:
    """A tiny valid job with one or two things changed."""
    job = _job()
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(["top", "unknown", "execution", "training", "huge"]))
        if where == "top":
            job[draw(st.sampled_from(_JOB_KEYS))] = draw(_BAD_VALUES)
        elif where == "unknown":
            job[draw(st.text(min_size=1, max_size=12))] = draw(_BAD_VALUES)
        elif where == "execution":
            job["execution"] = {draw(st.sampled_from([*_EXEC_KEYS, "turbo"])): draw(_BAD_VALUES)}
        elif where == "training":
            key = draw(st.sampled_from(["epochs", "batch_size", "learning_rate", "epochz",
                                        "seed", "data_split", "labels"]))
            job["overrides"] = {"training": {"epochs": 1, key: draw(_BAD_VALUES)}}
        else:  # big numbers where they cost nothing to refuse or to run briefly
            key = draw(st.sampled_from(["seed", "priority", "epochs", "zigzag"]))
            big = draw(st.sampled_from([10**12, 10**40, -(10**40), 1e308, float("inf")]))
            if key == "epochs":
                job["overrides"] = {"training": {"epochs": big}}
            elif key == "zigzag":
                job["overrides"] = {"training": {"epochs": 1, "labels": {"zigzag_threshold": big}}}
            else:
                job[key] = big
    return job


@st.composite
def _strategy_file(draw: st.DrawFn) -> Any:
    """A bare v3 strategy (one epoch), sometimes with a section changed or removed."""
    strategy = json.loads(json.dumps(_STRATEGY))
    strategy["training"]["epochs"] = 1
    strategy["name"] = draw(st.sampled_from(["rsi_minimal", "fuzzed", "bad name/../x", ""]))
    change = draw(st.sampled_from(["none", "drop", "retype", "indicator", "fuzzy", "inline"]))
    if change == "drop":
        del strategy[draw(st.sampled_from(["indicators", "fuzzy_sets", "nn_inputs", "model",
                                           "training", "training_data"]))]
    elif change == "retype":
        strategy[draw(st.sampled_from(sorted(strategy)))] = draw(_BAD_VALUES)
    elif change == "indicator":
        strategy["indicators"]["rsi_14"][draw(st.sampled_from(["type", "period", "source"]))] \
            = draw(_BAD_VALUES)
    elif change == "fuzzy":
        strategy["fuzzy_sets"]["rsi_zone"]["oversold"] = draw(_BAD_VALUES)
    elif change == "inline":
        return _job(strategy=strategy)
    return strategy


def _nested(depth: int) -> str:
    return "a: " + "{b: " * depth + "1" + "}" * depth + "\n"


_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))

_HOSTILE = st.sampled_from([
    b"", b"   \n# only a comment\n", b"42\n", b"- a\n- b\n", b"\x00\x01\x02binary\xff",
    b"strategy: [unclosed\n", b"\tstrategy: tabs\n", b"a: 1\na: 2\n", b"~\n",
    b"!!python/object/apply:os.system ['echo pwned']\n",
    b"strategy: !!python/name:os.system\n", b"a: &a [*a]\n", _BOMB.encode(),
    _nested(40).encode(), _nested(200).encode(), ("x: " + "[" * 500 + "]" * 500).encode(),
    b"strategy: rsi_minimal.yaml\n" + b"#" * (1 << 20) + b"\n",  # over 1 MiB
    b"\xef\xbb\xbf", b"\xff\xfe", "strategy: caf\u00e9.yaml\n".encode("latin-1"),
    b"--- a\n--- b\n",
])


@st.composite
def _content(draw: st.DrawFn) -> tuple[str, bytes]:
    """(what it is, bytes)."""
    kind = draw(st.sampled_from(["valid"] * 1 + ["nearly"] * 6 + ["strategy"] * 3 +
                                ["hostile"] * 4 + ["encoded"] * 3))
    if kind == "valid":
        return kind, yaml.safe_dump(_job(seed=draw(st.integers(1, 99)))).encode()
    if kind == "nearly":
        return kind, _dump(draw(_nearly_valid_job()))
    if kind == "strategy":
        return kind, _dump(draw(_strategy_file()))
    if kind == "hostile":
        return kind, draw(_HOSTILE)
    text = yaml.safe_dump(draw(st.one_of(_nearly_valid_job(), st.just(_job()))),
                          allow_unicode=True) + "# caf\u00e9 \u2603\n"
    encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "utf-8-sig",
                                     "cp1252"]))
    return f"encoded-{encoding}", text.encode(encoding, errors="replace")


def _dump(value: Any) -> bytes:
    try:
        return yaml.safe_dump(value, allow_unicode=True).encode()
    except (yaml.YAMLError, ValueError, OverflowError):
        return json.dumps(value, default=str).encode()


_NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")


@st.composite
def _name(draw: st.DrawFn) -> str:
    """A file name without the unique prefix: odd text and a suffix (not always .yaml)."""
    stem = draw(st.one_of(st.just("job"), st.text(_NAME_CHARS, max_size=20),
                          st.text(_NAME_CHARS, min_size=60, max_size=200)))
    suffix = draw(st.sampled_from([".yaml"] * 6 + [".yml", ".YAML", ".json", "", ".txt",
                                                   ".yaml.bak", ".Yml"]))
    name = stem + suffix
    while len(name.encode()) > MAX_NAME_BYTES - 12:
        name = name[1:]
    # Editors' names are left alone until renamed (spec section 2): never the final name here.
    if name.endswith((".tmp", ".part", ".swp", "~")):
        name += ".yaml"
    return name


@dataclass
class Drop:
    token: str
    name: str
    kind: str
    how: str
    data: bytes


@st.composite
def drops(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    """(name, kind, how it arrives, bytes) for one drop."""
    kind, data = draw(_content())
    how = draw(st.sampled_from(["rename"] * 8 + ["copy", "slow-copy", "symlink-out",
                                                 "symlink-dangling", "symlink-etc", "fifo",
                                                 "folder", "hardlink", "echo"]))
    return draw(_name()), kind, how, data


class Fuzzer:
    """Drops files into one live daemon and checks every drop's outcome."""

    def __init__(self, root: Path) -> None:
        self.site = Site(root)
        self.outside = root / "outside"
        self.outside.mkdir(exist_ok=True)
        self.daemon = Daemon(self.site, "fuzz", slots=2)
        self.drops: list[Drop] = []
        self.ended: dict[str, tuple[str, dict[str, Any]]] = {}  # token -> (job id, result)
        self.cancelled_at: dict[str, float] = {}
        self.violations: list[str] = []
        self.first_seen: dict[str, float] = {}

    def start(self) -> None:
        self.daemon.start()
        if not self.daemon.wait_ready():
            raise RuntimeError("the fuzz daemon did not start:\n" + self.daemon.log_text())

    def drop(self, name: str, kind: str, how: str, data: bytes) -> None:
        token = f"fz{len(self.drops):05d}_"
        name = token + name
        incoming = self.site.spool / "incoming" / name
        if how == "rename":
            self.site.drop(name, data)
        elif how in ("copy", "slow-copy"):  # written in place: accepted once complete
            with open(incoming, "wb") as handle:
                half = len(data) // 2
                handle.write(data[:half])
                handle.flush()
                if how == "slow-copy":
                    time.sleep(0.02)
                handle.write(data[half:])
        elif how == "echo":  # `echo >>` line by line with pauses: one job, the whole file
            for line in data.splitlines(keepends=True) or [data]:
                with open(incoming, "ab") as handle:
                    handle.write(line)
                time.sleep(0.05)
        elif how == "fifo":  # any file type gets an outcome (failed: not a regular file)
            os.mkfifo(incoming)
        elif how == "folder":  # a folder named like a drop gets one too
            name = token + "folder.yaml"
            (self.site.spool / "incoming" / name).mkdir()
        elif how == "hardlink":  # copied at acceptance: the user's file is not followed
            mine = self.outside / f"{token}.yaml"
            mine.write_bytes(data)
            os.link(mine, incoming)
        else:
            target = {"symlink-out": self.outside / f"{token}.yaml",
                      "symlink-dangling": self.outside / "missing.yaml",
                      "symlink-etc": Path("/etc/passwd")}[how]
            if how == "symlink-out":
                target.write_bytes(data)
            os.symlink(target, incoming)
        self.drops.append(Drop(token, name, kind, how, data))

    def outstanding(self) -> int:
        self.poll()
        return len(self.drops) - len(self.ended)

    def poll(self) -> None:
        jobs = self.site.spool / "jobs"
        by_token = {}
        for entry in os.scandir(jobs):
            match = re.match(r"(fz\d{5}_)", entry.name)
            if match:
                by_token[match[1]] = entry.name
        now = time.monotonic()
        for drop in self.drops:
            if drop.token in self.ended:
                continue
            self.first_seen.setdefault(drop.token, now)
            job_id = by_token.get(drop.token)
            if job_id is None:
                continue
            result = read_json(jobs / job_id / "result.json")
            if result is not None:
                self.ended[drop.token] = (job_id, result)
            elif now - self.first_seen[drop.token] > RUN_LIMIT_S and \
                    drop.token not in self.cancelled_at:
                (jobs / job_id / "cancel").touch()
                self.cancelled_at[drop.token] = now
        if not self.daemon.alive():
            raise AssertionError("the daemon died:\n" + self.daemon.log_text()[-3000:])

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.outstanding() and time.monotonic() < deadline:
            time.sleep(0.1)

    def check(self) -> list[str]:
        bad = list(self.violations)
        if not self.daemon.alive():
            bad.append(f"the daemon died: {self.daemon.log_text()[-2000:]}")
        for drop in self.drops:
            if drop.token not in self.ended:
                bad.append(f"{drop.name!r} ({drop.kind}, {drop.how}) never ended")
                continue
            job_id, result = self.ended[drop.token]
            state = result.get("state")
            if state == "failed":
                message = (result.get("error") or {}).get("message") or ""
                if not message.strip():
                    bad.append(f"{drop.name!r}: failed with an empty message")
                elif drop.name not in message:
                    bad.append(f"{drop.name!r} ({drop.kind}): the message does not name the "
                               f"file: {message[:300]!r}")
            elif state == "cancelled" and drop.token not in self.cancelled_at:
                bad.append(f"{drop.name!r}: cancelled, but nobody cancelled it")
            elif state not in ("completed", "cancelled"):
                bad.append(f"{drop.name!r}: state {state!r}")
            mine = self.outside / f"{drop.token}.yaml"
            if drop.how == "hardlink" and os.stat(mine).st_nlink != 1:
                bad.append(f"{drop.name!r}: the job still shares the user's hard-linked file")
            if not (self.site.job_dir(job_id) / "submitted.yaml").exists() and \
                    not (self.site.job_dir(job_id) / "submitted.yaml").is_symlink():
                bad.append(f"{drop.name!r}: the drop was not kept as submitted.yaml")
        left = [n for n in os.listdir(self.site.spool / "incoming") if not n.startswith(".")]
        if left:
            bad.append(f"left in incoming/: {left[:5]}")
        return bad

    def stop(self) -> None:
        if self.daemon.alive():
            self.daemon.send(15)
            if self.daemon.wait_exit(15) is None:
                self.violations.append("the daemon ignored SIGTERM")
        self.daemon.kill_group()

    def summary(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for _, result in self.ended.values():
            states[str(result.get("state"))] = states.get(str(result.get("state")), 0) + 1
        kinds: dict[str, int] = {}
        for drop in self.drops:
            key = drop.kind.split("-")[0] + ("" if drop.how == "rename" else f"/{drop.how}")
            kinds[key] = kinds.get(key, 0) + 1
        return {"drops": len(self.drops), "ended": len(self.ended), "states": states,
                "kinds": dict(sorted(kinds.items()))}


def run(drops_count: int, root: Path, seed: int | None = None,
        fuzzer: Fuzzer | None = None) -> tuple[dict[str, Any], list[str]]:
    """Drop ``drops_count`` generated files into one daemon; (summary, violations). With a
    started ``fuzzer``, into its daemon, which is left running."""
    own = fuzzer is None
    if fuzzer is None:
        fuzzer = Fuzzer(root)
        try:
            fuzzer.start()
        except BaseException:
            fuzzer.stop()
            raise

    @settings(max_examples=drops_count, database=None, deadline=None, derandomize=seed is None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(drops())
    def one(drop: tuple[str, str, str, bytes]) -> None:
        while fuzzer.outstanding() >= OUTSTANDING:
            time.sleep(0.05)
        fuzzer.drop(*drop)

    if seed is not None:
        one = hypothesis.seed(seed)(one)
    try:
        one()
        fuzzer.wait_all(RUN_LIMIT_S * 3 + 60)
        bad = fuzzer.check()
    finally:
        if own:
            fuzzer.stop()
    return fuzzer.summary(), bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.fuzz",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--seed", type=int, help="hypothesis seed (default: derandomized)")
    parser.add_argument("--root", help="work folder (default: a fresh temporary one, removed)")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="ktrdr-fuzz-"))
    started = time.monotonic()
    try:
        summary, bad = run(args.drops, root, args.seed)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started)
    summary["violations"] = len(bad)
    print(json.dumps(summary, indent=2))
    for line in bad:
        print("violation:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
