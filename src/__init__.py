"""prunesweep: an experiment harness for magnitude pruning of an MNIST MLP."""
