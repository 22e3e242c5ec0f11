"""Imported by the daemon's fork server only: every worker forks from a warm interpreter
(torch, the whole pipeline and matplotlib loaded, lazy first-use costs paid).

Two more things make a fork cheap:

- The command line's imports are loaded too. A forked child re-runs the daemon's main module
  (the ``ktrdr-daemon`` script, or ``ktrdr_daemon.cli`` under ``python -m``) the way
  multiprocessing prepares every child; with its imports already loaded that is ~1 ms instead of
  ~20 ms a job. Not ``ktrdr_daemon.cli`` itself: under ``python -m`` runpy would then warn, in
  every worker, that the module it is about to run as ``__mp_main__`` is already imported.
- ``gc.freeze()`` moves the ~360,000 objects loaded so far out of the collector's reach: a
  child's collections no longer walk them, which would touch (and so copy) every page holding
  one; a full collection in a child took ~200 ms and ~23,000 page faults without it.
"""

import gc

import ktrdr_daemon.commands  # noqa: F401  (what a child's re-run of the main module imports)
import ktrdr_daemon.model_commands  # noqa: F401
import ktrdr_daemon.service  # noqa: F401
from ktrdr_daemon.worker import warm_up

warm_up()
gc.freeze()
