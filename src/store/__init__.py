"""The MLflow store: where it is (``uri``, no MLflow import), experiments and run lookup (``tracking``), the
train-run cache, and the runs this process has open (closed as KILLED on an interrupt).

May import: MLflow and ``src.training`` (data file hashes). Must not import Hydra or cli, report, records.
"""
