"""Coordination around the pipeline: the spool protocol, the daemon loop, workers and the CLI."""

__version__ = "0.1.0"
