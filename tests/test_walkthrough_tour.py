"""The README's tour, typed as a new user types it, and the mistakes a new user makes.

The strategy and the job file are taken from README.md itself, so the tour the page promises is
the tour that is tested: write ``my_rsi.yaml``, ``train`` it, start ``run`` in the background,
``submit`` the README's job file, ``tail`` it to the end, ``ls``, ``show``, ``models``,
``report``, ``features``, then Ctrl-C the daemon. One daemon and two short trainings in all.

The mistakes (issue 18): a misspelt key trains nothing (``train``) and queues nothing
(``submit``) and says which key was meant; ``--strict`` turns a warning into an error; a file with
four mistakes reports all four at once; a misspelt indicator type is exactly one error. ``submit``
checks several files in one process, which keeps this cheap. Other walk-through files cover
ls, steering, models and the report.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tests.walkthrough import ROOT, User

README = ROOT / "README.md"


def readme_yaml(first_line: str) -> str:
    """The README's YAML block whose first line starts with ``first_line``."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"README.md has {len(found)} yaml blocks starting {first_line!r}"
    return found[0]


def line_of(text: str, job_id: str) -> str:
    """The listing line of ``job_id`` (the first word of the line is the id)."""
    lines = [ln for ln in text.splitlines() if ln.split()[:1] == [job_id]]
    assert lines, f"{job_id} not listed in:\n{text}"
    return lines[0]


def test_readme_tour(tmp_path: Path) -> None:
    user = User(tmp_path)
    user.write("my_rsi.yaml", readme_yaml("name: my_rsi"))

    # Train it now, in the foreground: the log's steps, then where the model went.
    said = user.run("train", "my_rsi.yaml")
    assert said.rc == 0, said.text
    version = tmp_path / "models" / "my_rsi" / "1h_v1"
    assert f"model saved: {version}" in said.out
    assert "12. Done" in said.text and "test accuracy" in said.out
    latest = tmp_path / "models" / "my_rsi" / "1h_latest"
    listed = {p.name for p in latest.iterdir()}
    assert {"model.pt", "config.json", "metrics.json", "features.json"} <= listed

    # Or hand it to a daemon: `run` holds its terminal, so it runs beside the user's commands.
    daemon = user.start("run")
    try:
        job = user.write("quick.yaml", readme_yaml("strategy: multi_indicator.yaml"))
        said = user.run("submit", job.name)
        assert said.rc == 0, said.text
        assert said.out.strip() == "quick"  # the job id is the file's stem

        said = user.run("tail", "quick", "--no-log")
        assert said.rc == 0, said.text  # 0: completed
        assert "completed:" in said.out and "test accuracy" in said.out
        result_path = tmp_path / "models" / "multi_indicator" / "1h_v1"
        assert str(result_path) in said.out

        said = user.run("ls")
        assert said.rc == 0, said.text
        row = line_of(said.out, "quick")
        assert "completed" in row and "100.0%" in row

        said = user.run("show", "quick")
        assert said.rc == 0, said.text
        assert "job quick: completed" in said.out
        assert "strategy_name: multi_indicator" in said.out  # the spec, as accepted
        assert str(result_path) in said.out  # the log tail names the model

        said = user.run("models")
        assert said.rc == 0, said.text
        assert "my_rsi: trained" in said.out and "multi_indicator: trained" in said.out
        assert "rsi_minimal: untrained" in said.out
        assert "1h_v1" in said.out

        said = user.run("report", "models/my_rsi/1h_latest")
        assert said.rc == 0, said.text
        written = re.search(r"report written to (\S+\.png)", said.out)
        assert written, said.text
        png = tmp_path / written.group(1)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

        said = user.run("features", "my_rsi.yaml", "--out", "f.csv")
        assert said.rc == 0, said.text
        with open(tmp_path / "f.csv", newline="") as handle:
            header = next(csv.reader(handle))
        assert header == ["timestamp", "1h_rsi_14", "1h_rsi_zone_oversold",
                          "1h_rsi_zone_neutral", "1h_rsi_zone_overbought", "label"]

        assert daemon.poll() is None, "run must hold its terminal until Ctrl-C"
    finally:
        stopped = User.interrupt(daemon)
    assert stopped.rc == 0, stopped.text
    assert "SIGINT" in stopped.err
    assert "Traceback" not in stopped.text
    # Its workers fork from a preloaded server: under `python -m` none may warn that the main
    # module was imported twice (a RuntimeWarning per job in a service's log).
    assert "RuntimeWarning" not in stopped.text


def test_mistakes_are_caught_before_training(tmp_path: Path) -> None:
    user = User(tmp_path)
    good = readme_yaml("name: my_rsi")

    # `epoch: 50` used to train 100 epochs on the default and publish the model.
    user.write("epoch.yaml", good.replace("  epochs: 20", "  epoch: 50"))
    said = user.run("train", "epoch.yaml")
    assert said.rc == 1, said.text
    assert "epoch.yaml: 1 error" in said.err, said.text
    assert "training.epoch: unknown key; did you mean 'epochs'?" in said.err

    # A parameter rsi does not take is a warning (KTRDR drops it too); --strict refuses it.
    user.write("extra.yaml", good.replace("{type: rsi, period: 14}",
                                          "{type: rsi, period: 14, smoothing: 3}"))
    said = user.run("train", "--strict", "extra.yaml")
    assert said.rc == 1, said.text
    assert "indicators.rsi_14: parameter smoothing is not used by rsi" in said.err
    assert "--strict refuses warnings" in said.err

    # The other mistakes, submitted together: each file gets its own errors, none is dropped.
    files = {
        "section.yaml": good.replace("\ntraining:", "\ntrainig:"),
        "layers.yaml": good.replace("hidden_layers:", "hidden_layer:"),
        "four.yaml": (good.replace("  epochs: 20", "  epoch: 50")
                      .replace("hidden_layers:", "hidden_layer:")
                      .replace("oversold: [0, 25, 45]", "oversold: [45, 25, 0]")
                      .replace("fuzzy_set: rsi_zone,", "fuzzy_set: rsi_zones,")),
        "kind.yaml": good.replace("type: rsi,", "type: rsii,"),
    }
    for name, text in files.items():
        assert text != good, name
        user.write(name, text)
    said = user.run("submit", *files)
    assert said.rc == 1, said.text
    assert said.out == "", said.text  # no job id: nothing was submitted
    errors = {block.split(":")[0]: block for block in said.err.split("error: ")[1:]}
    assert set(errors) == set(files), said.err

    assert "section.yaml: 1 error" in errors["section.yaml"]
    assert "trainig: unknown key; did you mean 'training'?" in errors["section.yaml"]
    assert "layers.yaml: 1 error" in errors["layers.yaml"]
    assert ("model.architecture.hidden_layer: unknown key; did you mean 'hidden_layers'?"
            in errors["layers.yaml"])

    # Four mistakes in one file: all four reported at once.
    assert "four.yaml: 4 errors" in errors["four.yaml"]
    for expected in ("training.epoch: unknown key; did you mean 'epochs'?",
                     "model.architecture.hidden_layer: unknown key",
                     "fuzzy_sets.rsi_zone.oversold: parameters [45, 25, 0] are out of order",
                     "nn_inputs[0].fuzzy_set: 'rsi_zones' is not a fuzzy set"):
        assert expected in errors["four.yaml"], said.err

    # A misspelt indicator type: one error, not a second one about the fuzzy set reading it.
    assert "kind.yaml: 1 error" in errors["kind.yaml"]
    assert ("indicators.rsi_14.type: 'rsii' is not an indicator; did you mean 'rsi'?"
            in errors["kind.yaml"])
    assert "'rsi_14' is not an indicator" not in said.err

    # Nothing was trained, published or queued by any of them.
    models = tmp_path / "models"
    assert not models.exists() or not any(models.iterdir())
    assert not any((tmp_path / "spool" / "incoming").iterdir())
    assert "Traceback" not in said.text


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_readme_and_docs_links_stay_inside_the_clone() -> None:
    """Every relative link of README.md and docs/ names a file of the clone (and a heading of it,
    when it has an anchor): nothing points at ../shared/ or another folder a clone lacks."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            name, _, anchor = target.partition("#")
            dest = (page.parent / name).resolve() if name else page
            if ROOT not in dest.parents or not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
    assert "shared/spec" not in README.read_text()
