"""The inference side: the dense numpy reference, the numba sparse kernels, engine choice, the timing protocol,
evaluation of a masked net, and the sparse model file with its loader (``src.engine.sparse_model.load``).
For the classic MLP: dense, kernels, choice; for any feed-forward net of dense, conv, pooling and flatten layers:
network (the net as arrays and its numpy forward pass), compaction, net_kernels, net_engine. The files: sparse_model
(versions 1 and 2, and the loader of all three), layer_json (a layer's JSON object in versions 2 and 3), and Deep
Compression's version 3: quantize (weight sharing), coding (relative indices, Huffman, lzma, zlib), compressed_model.

May import: numpy, numba, llvmlite and ``src.engine`` itself. Must not import TensorFlow, Keras, MLflow, Hydra or
any other ``src`` subpackage: an exported model runs with this folder alone.
"""
