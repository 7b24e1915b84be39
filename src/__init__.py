"""prunesweep: an experiment harness for neural-network pruning (Hydra sweeps, Keras, MLflow)."""
