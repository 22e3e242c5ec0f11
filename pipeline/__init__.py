"""The one shared training pipeline: strategy YAML -> features -> labels -> MLP -> model store.

Every daemon and the `ktrdr-daemon train` command call :func:`pipeline.run.run_training`;
nothing else trains. This package never imports ``ktrdr_daemon``.
"""

__version__ = "0.1.0"
