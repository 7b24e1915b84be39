"""The MLflow records of one job's runs: the train run, the retraining step, the prune run (params, metrics,
sizes, artifacts), and the replay of a finished prune run from the store.

May import every subpackage below it (report, cli, store, training, engine, pruning). Only ``src/job.py`` and the
entry points import it.
"""
