"""``--version`` and shell completion (``ktrdr-daemon completion bash|zsh|fish``).

Completion is argcomplete's: the shell runs ``ktrdr-daemon`` itself with ``_ARGCOMPLETE`` set,
and :func:`autocomplete` answers from the parser before any command runs. argcomplete is
imported only then, so an ordinary command pays nothing for it. Job ids complete from the
spool's ``jobs/`` and ``incoming/`` folders (a listing, nothing read).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROG = "ktrdr-daemon"
SHELLS = ("bash", "zsh", "fish")
JOB_ID_DESTS = ("job_id", "job_ids")

COMPLETION_HELP = f"""\
Print the shell code that completes {PROG}'s commands, flags and job ids.
Enable it once, in your shell's start-up file:

  bash  (~/.bashrc):                   eval "$({PROG} completion bash)"
  zsh   (~/.zshrc, after compinit):    eval "$({PROG} completion zsh)"
  fish  (~/.config/fish/config.fish):  {PROG} completion fish | source

then open a new shell. {PROG} must be on PATH (the virtual environment activated, or
its bin/ folder on PATH); completion runs it with _ARGCOMPLETE set (argcomplete)."""


def version() -> str:
    """The installed package's version; pyproject.toml's when run from a source tree that is
    not installed (``PYTHONPATH=.``)."""
    from importlib import metadata

    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


class VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (argparse's own action
    wants the string when the parser is built, which every command would pay for)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{PROG} {version()}")
        parser.exit()


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the completion code for ``args.shell``."""
    import argcomplete

    sys.stdout.write(argcomplete.shellcode([PROG], shell=args.shell))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("completion", help="print shell completion code (bash, zsh, fish)",
                       description=COMPLETION_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", nargs="?", default="bash", choices=SHELLS,
                   help="the shell to complete in (default bash)")
    p.set_defaults(func=cmd_completion)


def job_ids(prefix: str, parsed_args: argparse.Namespace | None = None,
            **_: Any) -> list[str]:
    """Job ids starting with ``prefix``: the folders of ``jobs/`` and the drops in
    ``incoming/`` of the spool the command line (or KTRDR_SPOOL, or the config) names."""
    try:
        from ktrdr_daemon.cli_support import settings_from

        spool = settings_from(parsed_args or argparse.Namespace()).spool
    except (SystemExit, Exception):  # a broken config must not break the shell
        spool = Path(os.environ.get("KTRDR_SPOOL", "spool"))
    found: set[str] = set()
    for folder, strip in ((spool / "jobs", False), (spool / "incoming", True)):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if strip:
                if name.startswith(".") or not name.endswith((".yaml", ".yml")):
                    continue
                name = name.rsplit(".", 1)[0]
            if name.startswith(prefix):
                found.add(name)
    return sorted(found)


def _subparsers(parser: argparse.ArgumentParser) -> Iterable[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _subparsers(child)


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request and exit, or return at once when there is none."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    for each in _subparsers(parser):
        for action in each._actions:
            if action.dest in JOB_ID_DESTS:
                action.completer = job_ids  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser)
