"""A researcher's model store, driven from the shell: ``models`` says how each version was
trained (job, seed, date range, epochs, device), sorts by a metric, refuses a name it does not
know, and ``models rm`` takes versions out; the read-only commands start without torch, pandas,
pydantic or matplotlib.

Two trainings for the whole file: two job files (seeds 7 and 8, two epochs over three months)
submitted and drained by one ``run --once``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from ktrdr_daemon.identity import DaemonIdentity
from ktrdr_daemon.spool import Incoming, Spool, accept_drop, submit_drop, try_claim
from pipeline.versions import point_latest
from tests.walkthrough import User

JOB = """strategy: rsi_minimal.yaml
start: 2017-06-01
end: 2017-09-01
seed: {seed}
overrides:
  training:
    epochs: 2
"""
HEAVY = ("torch", "pandas", "pydantic", "matplotlib")
# Runs the CLI's main as `ktrdr-daemon ARGS` does, then names the heavy modules it imported.
PROBE = f"""import sys
from ktrdr_daemon.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY=" + ",".join(sorted(set({HEAVY!r}) & set(sys.modules))), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> User:
    me = User(tmp_path_factory.mktemp("researcher"))
    me.write("seed7.yaml", JOB.format(seed=7))
    me.write("seed8.yaml", JOB.format(seed=8))
    said = me.run("submit", "seed7.yaml", "seed8.yaml")
    assert said.rc == 0 and said.out.split() == ["seed7", "seed8"], said.text
    said = me.run("run", "--once", "--no-show", timeout=600)
    assert said.rc == 0, said.text
    return me


def heavy_modules(user: User, *args: str) -> list[str]:
    """The heavy modules ``ktrdr-daemon ARGS`` imported, as a subprocess in the user's folder."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=user.home, env=user.env,
                          capture_output=True, text=True, timeout=120)
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("HEAVY="), done.stderr
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


def test_read_only_commands_start_without_torch_pandas_or_pydantic(user: User) -> None:
    for args in (["--help"], ["ls"], ["show", "seed7"], ["models"], ["models", "rsi_minimal"],
                 ["models", "nosuch"], ["daemons"], ["tail", "seed7"], ["cancel", "seed7"],
                 ["retry", "seed7"], ["models", "--help"]):
        assert heavy_modules(user, *args) == [], args
    # submit validates the strategy (pydantic, pandas) but never needs torch
    user.write("later.yaml", JOB.format(seed=9))
    imported = heavy_modules(user, "submit", "later.yaml", "--spool", "other-spool")
    assert "torch" not in imported and "matplotlib" not in imported
    assert (user.home / "other-spool" / "incoming" / "later.yaml").is_file()


def test_models_says_how_each_version_was_trained(user: User) -> None:
    said = user.run("models", "rsi_minimal")
    assert said.rc == 0, said.text
    lines = said.out.splitlines()
    assert lines[0] == "rsi_minimal: trained"
    assert [ln.split()[0] for ln in lines[1::3]] == ["1h_v1", "1h_v2"]
    how = {ln.split()[1]: ln.split() for ln in lines[2::3]}  # job id -> the provenance line
    assert how["seed7"] == ["job", "seed7", "(attempt", "1)", "seed", "7",
                            "2017-06-01..2017-09-01", "epochs", "2", "cpu"]
    assert how["seed8"][5] == "8"
    for line in lines[1::3]:  # the score beside what always guessing the commonest class gets
        assert re.search(r"acc \d\.\d{3} \(base \d\.\d{3}\)  f1 ", line), line
    said = user.run("models", "--json")
    rows = {r["strategy"]: r for r in json.loads(said.out)}
    assert rows["multi_indicator"] == {"strategy": "multi_indicator", "trained": False,
                                       "versions": []}  # a strategy file, not trained yet
    first = rows["rsi_minimal"]["versions"][0]
    assert {"version", "path", "created_at", "test_accuracy", "f1", "precision", "recall",
            "best_val_accuracy", "report"} <= set(first)  # the keys scripts already read
    assert {k: first[k] for k in ("job_id", "attempt", "seed", "device", "start_date",
                                  "end_date", "epochs", "epochs_run")} == {
        "job_id": "seed7", "attempt": 1, "seed": 7, "device": "cpu",
        "start_date": "2017-06-01", "end_date": "2017-09-01", "epochs": 2, "epochs_run": 2}
    version = user.home / first["path"]
    test = json.loads((version / "metrics.json").read_text())["test"]
    assert first["baseline_accuracy"] == test["baseline_accuracy"] > 0


def test_models_of_an_unknown_name_is_an_error_with_did_you_mean(user: User) -> None:
    said = user.run("models", "rsi_minimall")
    assert said.rc == 1 and said.out == ""
    assert "rsi_minimall: no such strategy" in said.err and "did you mean rsi_minimal" in said.err
    said = user.run("models", "multi_indicator")  # a strategy file: known, not trained
    assert (said.rc, said.out) == (0, "multi_indicator: untrained\n")


def test_models_sort_puts_the_best_version_first(user: User) -> None:
    store = user.home / "models" / "rsi_minimal"
    # A third version, as a better training would have written it: a higher test f1, a lower
    # validation accuracy than both.
    shutil.copytree(store / "1h_v1", store / "1h_v3")
    metrics = json.loads((store / "1h_v3" / "metrics.json").read_text())
    metrics["test"]["f1"], metrics["best_val_accuracy"] = 0.99, 0.01
    (store / "1h_v3" / "metrics.json").write_text(json.dumps(metrics))

    def order(metric: str) -> list[str]:
        said = user.run("models", "rsi_minimal", "--sort", metric, "--json")
        assert said.rc == 0, said.text
        return [v["version"] for v in json.loads(said.out)[0]["versions"]]

    assert order("f1")[0] == "1h_v3"
    assert order("best_val_accuracy")[-1] == "1h_v3"
    # Errors sort ascending: two regression-shaped versions, the later one the better.
    for n, mae in ((4, 0.5), (5, 0.2)):
        shutil.copytree(store / "1h_v1", store / f"1h_v{n}")
        metrics["test"] = {"output_format": "regression", "mae": mae,
                           "directional_accuracy": 0.6}
        (store / f"1h_v{n}" / "metrics.json").write_text(json.dumps(metrics))
    assert order("mae")[:2] == ["1h_v5", "1h_v4"]
    said = user.run("models", "rsi_minimal")
    assert "1h_v5      dir 0.600  mae 0.2  " in said.out
    for n in (4, 5):
        shutil.rmtree(store / f"1h_v{n}")
    helped = " ".join(user.run("models", "--help").out.split())  # as wrapped for the terminal
    assert "descending for scores" in helped and "ascending for errors (mae)" in helped
    said = user.run("models", "--sort", "speed")
    assert said.rc == 64 and "invalid choice" in said.err  # a usage error


def test_models_rm_removes_versions_and_moves_latest(user: User) -> None:
    store = user.home / "models" / "rsi_minimal"
    assert (store / "1h_v3").is_dir(), "made by the sort test"
    said = user.run("models", "rm", "rsi_minimal", "1h_v3")
    assert said.rc == 0, said.text
    assert said.out.splitlines() == [f"removed rsi_minimal 1h_v3 ({store / '1h_v3'})",
                                     "1h_latest -> 1h_v2"]
    assert not (store / "1h_v3").exists() and (store / "1h_latest").resolve().name == "1h_v2"

    # A version whose job is still running (a daemon between publishing and writing the
    # result, which will name it) is refused.
    spool = Spool(user.home / "spool")
    submit_drop(spool, JOB.format(seed=9).encode(), "seed9.yaml")
    (job_id,) = [accept_drop(spool, p) for p in Incoming(spool).complete_drops()]
    assert try_claim(spool, job_id, DaemonIdentity.current("walkthrough")) is not None
    shutil.copytree(store / "1h_v2", store / "1h_v5")
    meta = json.loads((store / "1h_v5" / "metadata.json").read_text())
    (store / "1h_v5" / "metadata.json").write_text(json.dumps({**meta, "job_id": job_id}))
    point_latest(store, "1h")  # published: the daemon repoints the link
    said = user.run("models", "rm", "rsi_minimal", "1h_v5")
    assert said.rc == 1 and f"job {job_id} that published it is still running" in said.err
    assert (store / "1h_v5").is_dir() and (store / "1h_latest").resolve().name == "1h_v5"
    shutil.rmtree(store / "1h_v5")  # as a withdrawn (cancelled) publish would leave it
    point_latest(store, "1h")

    said = user.run("models", "rm", "rsi_minimal", "1h_v7", "1h_v2")
    assert said.rc == 1 and "no version '1h_v7'; it has 1h_v1, 1h_v2" in said.err
    assert (store / "1h_v2").is_dir(), "nothing is removed when one name is wrong"
    said = user.run("models", "rm", "rsi_minimall", "1h_v1")
    assert said.rc == 1 and "did you mean rsi_minimal" in said.err

    said = user.run("models", "rm", "rsi_minimal", "v2", "--json")
    assert said.rc == 0, said.text
    assert json.loads(said.out) == {
        "removed": [{"strategy": "rsi_minimal", "version": "1h_v2",
                     "path": str(store / "1h_v2"), "removed": True}],
        "latest": {"1h": "1h_v1"}}
    said = user.run("models", "rm", "rsi_minimal", "1")
    assert said.out.splitlines()[-1] == "1h_latest: removed (no version left)"
    assert sorted(p.name for p in store.iterdir()) == []
    staging = user.home / "models" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == [], "no half-removed folder left"
    said = user.run("models", "rsi_minimal")
    assert (said.rc, said.out) == (0, "rsi_minimal: untrained\n")
    said = user.run("models", "rm", "rsi_minimal", "1h_v1")
    assert said.rc == 1 and "rsi_minimal: no versions to remove" in said.err
