"""Reports, built from the MLflow store alone: which runs (``runs``), their tables (``table``), aggregation over
seeds, the study's findings, figures, and the sweep callback that writes a report at the end of a multirun.
``python -m src.report`` is its command line.

May import: ``src.cli``, ``src.store``, ``src.training`` (files, data sizes), ``src.pruning``. Must not import
``src.records`` or train anything.
"""
