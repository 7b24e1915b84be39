"""Pruning math: masks (weight, unit, random, global), sparsity schedules, what a ``prune`` config removes,
weight statistics. Pure numpy on arrays; no I/O.

May import: numpy and ``src.pruning`` itself. Must not import TensorFlow, Keras, MLflow, Hydra or any other
``src`` subpackage: every stage above calls into it.
"""
