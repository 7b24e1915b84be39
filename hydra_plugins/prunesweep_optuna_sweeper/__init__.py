"""Hydra Sweeper that runs an Optuna study (ask/tell) over prunesweep jobs: ``hydra/sweeper=prunesweep_optuna``.

``hydra_plugins`` itself is a namespace package (no ``__init__.py``), so Hydra finds this plugin next
to installed ones. Modules named ``_*`` are skipped by Hydra's plugin scan: they hold the code that
imports Optuna, MLflow and Matplotlib, which only a search needs.
"""
