"""Keras: the model, seeded training, retraining with held masks, the ``.keras`` file read without Keras, and the
data (MNIST, shipped offline copy).

May import: ``src.pruning``, ``src.engine``. Must not import MLflow, Hydra or the subpackages above it (store, cli,
report, records). TensorFlow and Keras are imported only by the modules that train.
"""
