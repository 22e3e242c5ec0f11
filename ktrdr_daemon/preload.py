"""Imported by the daemon's fork server only: every worker forks from a warm interpreter
(torch, the whole pipeline and matplotlib loaded, lazy first-use costs paid)."""

from ktrdr_daemon.worker import warm_up

warm_up()
