"""A new user reads what a model learned: the training report and the warnings around it,
driven as typed at a terminal (``tests/walkthrough.py``'s :class:`User`).

- A 20-day date range leaves the validation split one class: ``train`` says so, names the
  split, its counts and the fix, and ``--strict`` refuses to train it.
- The test accuracy is printed beside its majority-class baseline, and metrics.json holds the
  baseline, per-class precision/recall/F1 and the split date ranges, consistent with the label
  counts.
- Through the daemon: the warning is in the job's log and result; ``report`` of a job that
  failed before training is an error that writes nothing; ``report`` of the trained one names
  its panels.
- A regression model's report has its own panels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from walkthrough import User

SHORT = """\
strategy: multi_indicator.yaml
start: 2017-09-01
end: 2017-09-21
overrides:
  training:
    epochs: 3
"""
NO_DATA = "strategy: multi_indicator.yaml\nsymbols: [GBPUSD]\n"
REGRESSION = "strategy: forward_return.yaml\noverrides:\n  training:\n    epochs: 2\n"
ONE_CLASS = "the validation split has a single class, BUY (BUY 52, HOLD 0, SELL 0)"
FIX = "train on a longer date range"
CLASSIFIER_PANELS = "loss, accuracy, confusion, per_class, labels, importance"


def flat(text: str) -> str:
    """What a person reads, whatever the terminal's width wrapped."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> User:
    person = User(tmp_path_factory.mktemp("report-user"))
    person.write("short.yaml", SHORT)
    person.write("nodata.yaml", NO_DATA)
    person.write("returns.yaml", REGRESSION)
    return person


def saved_model(said_out: str) -> Path:
    (line,) = [ln for ln in said_out.splitlines() if ln.startswith("model saved: ")]
    return Path(line.removeprefix("model saved: "))


def test_a_short_date_range_is_warned_about_and_strict_refuses_it(user: User) -> None:
    said = user.run("train", "short.yaml")
    assert said.rc == 0, said.text
    text = flat(said.text)
    assert f"warning: {ONE_CLASS}" in text and FIX in text
    assert "validation: 52 rows, 2017-09-15 16:00 .. 2017-09-19 19:00" in text
    folder = saved_model(said.out)
    metrics = json.loads((folder / "metrics.json").read_text())
    test, counts = metrics["test"], metrics["labels"]["test"]

    # The baseline: the share of the test split's biggest class, printed beside the accuracy.
    biggest = max(counts, key=counts.get)
    share = counts[biggest] / sum(counts.values())
    assert (test["baseline_class"], test["baseline_accuracy"]) == (biggest, pytest.approx(share))
    assert (f"test accuracy {test['test_accuracy']:.3f} (majority-class baseline {share:.3f}: "
            f"always {biggest})") in text
    # Per class: support is the label count, recall the confusion matrix's diagonal share, and
    # every class (one with recall 0 included) is in the printed line.
    matrix = test["confusion_matrix"]
    for i, name in enumerate(counts):
        stats = test["per_class"][name]
        assert stats["support"] == counts[name] == sum(matrix[i])
        assert stats["recall"] == pytest.approx(matrix[i][i] / counts[name] if counts[name] else 0)
        assert (f"{name} precision {stats['precision']:.2f} recall {stats['recall']:.2f}"
                in text)
    # The split date ranges, in order, with their row counts.
    splits = metrics["splits"]
    assert splits["validation"] == {"rows": 52, "first": "2017-09-15T16:00:00+00:00",
                                    "last": "2017-09-19T19:00:00+00:00"}
    assert splits["train"]["last"] < splits["validation"]["first"] < splits["test"]["first"]
    assert (folder / "report.png").stat().st_size > 10_000

    strict = user.run("train", "--strict", "short.yaml")
    assert strict.rc == 1, strict.text
    assert f"error: {ONE_CLASS}" in flat(strict.err) and "(an error under --strict)" in strict.err
    assert sorted(p.name for p in folder.parent.iterdir() if "_v" in p.name) == [folder.name]


def test_through_the_daemon_warning_and_reports(user: User) -> None:
    submitted = user.run("submit", "short.yaml", "nodata.yaml")
    assert submitted.rc == 0, submitted.text
    assert user.run("run", "--once", timeout=600).rc == 0
    short, nodata = "short", "nodata"  # a job is named after its file

    result = json.loads((user.home / "spool" / "jobs" / short / "result.json").read_text())
    assert result["state"] == "completed"
    assert [w for w in result["warnings"] if ONE_CLASS in w and FIX in w]
    log = (user.home / "spool" / "jobs" / short / "log.txt").read_text()
    assert f"warning: {ONE_CLASS}" in log

    failed = user.run("report", nodata)
    assert failed.rc == 1, failed.text
    assert failed.err.startswith(f"error: job {nodata} failed before training: nodata.yaml: no "
                                 "price file for GBPUSD"), failed.err
    assert failed.err.rstrip().endswith("; nothing to draw")
    assert not list(user.home.glob("report_*.png")), "no empty picture written"

    drawn = user.run("report", short)
    assert drawn.rc == 0, drawn.text
    assert drawn.out.strip() == f"report written to report_{short}.png ({CLASSIFIER_PANELS})"


def test_a_regression_report_has_its_own_panels(user: User) -> None:
    said = user.run("train", "returns.yaml")
    assert said.rc == 0, said.text
    folder = saved_model(said.out)
    test = json.loads((folder / "metrics.json").read_text())["test"]
    assert f"direction {test['directional_accuracy']:.3f} (baseline " in flat(said.out)
    drawn = user.run("report", str(folder), "--out", "returns.png")
    assert drawn.rc == 0, drawn.text
    assert drawn.out.strip() == ("report written to returns.png (loss, direction, calibration, "
                                 "residuals, signals, importance)")
    assert (user.home / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
