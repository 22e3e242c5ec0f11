"""Imported by the daemon's fork server only: every worker forks from a warm interpreter."""

from ktrdr_daemon.worker import warm_up

warm_up()
