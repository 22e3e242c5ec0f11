"""Fault injection against real daemons on a real spool (issue 5, docs/reliability.md).

``harness``: crashes, stops, hand-backs and late joiners at random points of a job's life.
``fuzz``: hostile job files dropped into one live daemon. ``disk``: a spool on a full disk.
"""
