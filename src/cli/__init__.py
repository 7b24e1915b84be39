"""Command-line plumbing: the config schema and its checks, one-line errors, interrupts, per-phase clocks, the
identity of a Hydra multirun.

May import: ``src.store``, ``src.training``, ``src.engine``, ``src.pruning``. Must not import report or records.
"""
