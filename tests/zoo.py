"""The model zoo of issue 27: small Keras 3 models of every layer family prunesweep should prune (residual adds,
concatenations, BatchNorm, depthwise and separable convolutions, attention, RNNs, merges, nested
keras.applications backbones). Importing this module imports Keras.

Every model takes MNIST pixels, ``(28, 28)`` (or ``(28, 28, 1)`` for ``mobile_seq``) in the 0..255 range, scales
them inside (``Rescaling(1/255)``) and returns 10 scores: logits from a final ``Dense(10)``, or probabilities
where :func:`ends_in_softmax` says so (``gru_rnn``). Every layer has an explicit name, so pruning names are
stable; the layers inside the keras.applications backbones are named by Keras (their ``input_layer_<n>`` and, in
EfficientNet, ``rescaling``/``normalization`` take a per-session counter: see :func:`efficientnet`). The small
models build in well under a second and train one epoch on 2,000 images in 1-7 s here (2 shared cores);
MobileNetV2 builds in ~1-2 s and trains in ~20-30 s, EfficientNetB0 ~2-3 s and ~35-65 s.

Names, as Keras 3.15 gives them: a variable's ``path`` is ``<layer>/<sublayer>/<variable>`` (``mha/query/kernel``,
``gru/gru_cell/kernel``), but it is no stable key: a nested backbone's variables carry no prefix of the backbone
(``Conv1/kernel``, not ``mobilenetv2/Conv1/kernel``), so an outer layer named like an inner one gives two equal
paths; and a Sequential model, or a wrapper layer, built in code prefixes its own name (``mlp_bn/dense1/kernel``,
``bilstm/forward_lstm/lstm_cell/kernel``) where the same model loaded from its file does not (``dense1/kernel``,
``forward_lstm/lstm_cell/kernel``). In the ``.keras`` weights file layers are named by class, not name
(``layers/functional/layers/conv2d_3/vars/0``, ``layers/multi_head_attention/query_dense/vars/0``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

L = keras.layers
PIXELS = (28, 28)
CLASSES = 10
DATA = Path(__file__).resolve().parents[1] / "data" / "mnist.npz"
BN_MOMENTUM = 0.9  # Keras's 0.99 leaves 72% of the initial moving statistics after one epoch on 2,000 images
# (32 steps), so a BatchNorm model evaluates near chance; 0.9 leaves 3%. The applications keep their own.


def _pixels() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(input, image): the ``(28, 28)`` pixel input and the scaled ``(28, 28, 1)`` image."""
    inputs = keras.Input(PIXELS, name="pixels")
    x = L.Reshape((*PIXELS, 1), name="add_channel")(inputs)
    return inputs, L.Rescaling(1 / 255, name="rescale")(x)


def mlp_bn() -> keras.Model:
    """Sequential MLP: Dense (with bias) -> BatchNorm -> ReLU -> Dropout, Dense (no bias) -> BatchNorm -> ReLU ->
    Dropout, Dense logits."""
    return keras.Sequential([
        keras.Input(PIXELS, name="pixels"), L.Flatten(name="flatten"), L.Rescaling(1 / 255, name="rescale"),
        L.Dense(96, name="dense1"), L.BatchNormalization(momentum=BN_MOMENTUM, name="bn1"),
        L.ReLU(name="relu1"), L.Dropout(0.2, name="drop1"),
        L.Dense(64, use_bias=False, name="dense2"), L.BatchNormalization(momentum=BN_MOMENTUM, name="bn2"),
        L.ReLU(name="relu2"), L.Dropout(0.2, name="drop2"),
        L.Dense(CLASSES, name="logits")], name="mlp_bn")


def _conv_bn(x, filters: int, kernel: int, name: str, strides: int = 1, relu: bool = True):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet() -> keras.Model:
    """Small ResNet: Conv-BN-ReLU stem (16), an identity block (16) and a strided block (32) whose shortcut is a
    1x1 stride-2 projection with BN; GlobalAveragePooling2D, Dropout, Dense logits."""
    inputs, x = _pixels()
    x = _conv_bn(x, 16, 3, "stem")
    x = L.MaxPooling2D(2, name="stem_pool")(x)  # 14x14
    y = _conv_bn(x, 16, 3, "block1_a")
    y = _conv_bn(y, 16, 3, "block1_b", relu=False)
    x = L.ReLU(name="block1_out")(L.Add(name="block1_add")([x, y]))
    y = _conv_bn(x, 32, 3, "block2_a", strides=2)  # 7x7
    y = _conv_bn(y, 32, 3, "block2_b", relu=False)
    shortcut = _conv_bn(x, 32, 1, "block2_proj", strides=2, relu=False)
    x = L.ReLU(name="block2_out")(L.Add(name="block2_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.2, name="drop")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="resnet")


def transformer() -> keras.Model:
    """Tiny transformer over the 28 rows as tokens of 28 features (no position embedding): Dense embedding (32),
    MultiHeadAttention (2 heads, key_dim 8) + residual Add + LayerNorm, FFN (64, 32) + residual Add + LayerNorm,
    GlobalAveragePooling1D, Dense logits."""
    inputs = keras.Input(PIXELS, name="pixels")
    x = L.Rescaling(1 / 255, name="rescale")(inputs)
    x = L.Dense(32, name="embed")(x)
    a = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(x, x)
    x = L.LayerNormalization(name="ln1")(L.Add(name="res1")([x, a]))
    f = L.Dense(64, activation="relu", name="ffn1")(x)
    f = L.Dense(32, name="ffn2")(f)
    x = L.LayerNormalization(name="ln2")(L.Add(name="res2")([x, f]))
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="transformer")


def densenet() -> keras.Model:
    """DenseNet-style: a stem conv, a dense block of 3 Conv-BN-ReLU layers (growth 8) each concatenated to its
    input, a 1x1 transition conv + average pooling, a second dense block of 2, GlobalAveragePooling2D, Dense."""
    inputs, x = _pixels()
    x = L.Conv2D(16, 3, padding="same", name="stem_conv")(x)
    x = L.MaxPooling2D(2, name="stem_pool")(x)  # 14x14
    for block, layers in ((1, 3), (2, 2)):
        for i in range(1, layers + 1):
            y = _conv_bn(x, 8, 3, f"block{block}_{i}")
            x = L.Concatenate(name=f"block{block}_{i}_concat")([x, y])
        if block == 1:
            x = _conv_bn(x, 16, 1, "transition")
            x = L.AveragePooling2D(2, name="transition_pool")(x)  # 7x7
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="densenet")


def _to_rgb32(x, how: str):
    """A 1-channel image resized to 32x32 (the smallest input the applications take) and made 3-channel by
    ``how``: ``concat`` (the gray channel three times) or ``conv`` (a learned 1x1 Conv2D)."""
    x = L.Resizing(32, 32, name="resize")(x)
    return (L.Concatenate(name="to_rgb")([x, x, x]) if how == "concat" else
            L.Conv2D(3, 1, name="to_rgb")(x))


def mobilenetv2() -> keras.Model:
    """keras.applications.MobileNetV2 (alpha 0.35, no weights, no top) nested as one layer named ``mobilenetv2``:
    pixels -> Reshape -> Rescaling -> Resizing(32, 32) -> Concatenate to 3 channels -> backbone ->
    GlobalAveragePooling2D -> Dense logits. ~410k parameters."""
    inputs, x = _pixels()
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False,
                                              name="mobilenetv2")
    x = backbone(_to_rgb32(x, "concat"))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="mobilenetv2_32")


def efficientnet() -> keras.Model:
    """keras.applications.EfficientNetB0 (no weights, no top) at 32x32, nested as one layer named
    ``efficientnetb0``, fed by a 1x1 Conv2D to 3 channels. The backbone holds its own Rescaling(1/255) and an
    un-adapted Normalization (mean 0, variance 1), squeeze-excite blocks (GlobalAveragePooling2D keepdims,
    Reshape, Multiply), swish activations, ZeroPadding2D and DepthwiseConv2D. Its input layer, ``rescaling`` and
    ``normalization`` layers are auto-named (``rescaling_1`` ... when several are built in one session). ~4M
    parameters."""
    inputs, x = _pixels()
    backbone = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, include_top=False,
                                                 name="efficientnetb0")
    x = backbone(_to_rgb32(x, "conv"))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="efficientnetb0_32")


def mobile_seq() -> keras.Model:
    """Sequential on ``(28, 28, 1)`` input: DepthwiseConv2D (multiplier 8), SeparableConv2D, AveragePooling2D,
    SeparableConv2D (strided, no bias), AveragePooling2D, Flatten, Dense logits."""
    return keras.Sequential([
        keras.Input((*PIXELS, 1), name="pixels"), L.Rescaling(1 / 255, name="rescale"),
        L.DepthwiseConv2D(3, depth_multiplier=8, activation="relu", name="depthwise"),  # 26x26x8
        L.SeparableConv2D(16, 3, padding="same", activation="relu", name="separable1"),
        L.AveragePooling2D(2, name="pool1"),  # 13x13
        L.SeparableConv2D(32, 3, strides=2, padding="same", use_bias=False, activation="relu", name="separable2"),
        L.AveragePooling2D(2, name="pool2"),  # 3x3 (7 // 2)
        L.Flatten(name="flatten"), L.Dense(CLASSES, name="logits")], name="mobile_seq")


def conv1d_lstm() -> keras.Model:
    """Rows as a sequence: Conv1D (32) over the rows, MaxPooling1D, LSTM (32), Dense logits."""
    inputs = keras.Input(PIXELS, name="pixels")
    x = L.Rescaling(1 / 255, name="rescale")(inputs)
    x = L.Conv1D(32, 3, padding="same", activation="relu", name="conv1d")(x)
    x = L.MaxPooling1D(2, name="pool")(x)  # 14 steps
    x = L.LSTM(32, name="lstm")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="conv1d_lstm")


def gru_rnn() -> keras.Model:
    """Rows as a sequence: GRU (32, return_sequences) -> SimpleRNN (32) -> Dense with softmax (the zoo's model
    that returns probabilities, not logits)."""
    inputs = keras.Input(PIXELS, name="pixels")
    x = L.Rescaling(1 / 255, name="rescale")(inputs)
    x = L.GRU(32, return_sequences=True, name="gru")(x)
    x = L.SimpleRNN(32, name="rnn")(x)
    return keras.Model(inputs, L.Dense(CLASSES, activation="softmax", name="probabilities")(x), name="gru_rnn")


def multi_merge() -> keras.Model:
    """One input, two conv branches merged by Subtract, Multiply, Average and Maximum; a strided conv, a
    Conv2DTranspose back up, the feature map as 196 tokens through EinsumDense (8 -> 16), Flatten, Dense."""
    inputs, x = _pixels()
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_a")(x)
    b = L.Conv2D(8, 3, padding="same", activation="tanh", name="branch_b")(x)
    diff = L.Subtract(name="subtract")([a, b])
    prod = L.Multiply(name="multiply")([a, b])
    mean = L.Average(name="average")([diff, prod])
    x = L.Maximum(name="maximum")([mean, a])
    x = L.MaxPooling2D(2, name="pool")(x)  # 14x14x8
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down")(x)  # 7x7x16
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="up")(x)  # 14x14x8
    x = L.Reshape((14 * 14, 8), name="to_tokens")(x)
    x = L.EinsumDense("abc,cd->abd", output_shape=(14 * 14, 16), bias_axes="d", activation="relu", name="einsum")(x)
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="multi_merge")


def embedding() -> keras.Model:
    """Pixels as tokens: Rescaling, Discretization into 8 gray levels (integer ids 0..7), Embedding (8 -> 4) per
    pixel, Reshape to 28 rows of 112 features, Dense (32, relu) per row, Flatten, Dense logits."""
    inputs = keras.Input(PIXELS, name="pixels")
    x = L.Rescaling(1 / 255, name="rescale")(inputs)
    x = L.Discretization(bin_boundaries=[i / 8 for i in range(1, 8)], name="gray_levels")(x)
    x = L.Embedding(8, 4, name="embed")(x)  # (28, 28, 4)
    x = L.Reshape((28, 28 * 4), name="rows")(x)
    x = L.Dense(32, activation="relu", name="row_dense")(x)
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="embedding")


def wrappers() -> keras.Model:
    """Layers that wrap layers: Bidirectional(LSTM 16, return_sequences) and TimeDistributed(Dense 16) over the
    rows, Flatten, Dense logits."""
    inputs = keras.Input(PIXELS, name="pixels")
    x = L.Rescaling(1 / 255, name="rescale")(inputs)
    x = L.Bidirectional(L.LSTM(16, return_sequences=True, name="lstm"), name="bilstm")(x)  # (28, 32)
    x = L.TimeDistributed(L.Dense(16, activation="relu", name="row_dense"), name="per_row")(x)
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="wrappers")


def conv_variants() -> keras.Model:
    """Conv2D options and the layers around them: ZeroPadding2D, a dilated Conv2D, a grouped Conv2D (2 groups),
    PReLU, GroupNormalization, SpatialDropout2D, UpSampling2D, Cropping2D, LeakyReLU, GlobalMaxPooling2D."""
    inputs, x = _pixels()
    x = L.ZeroPadding2D(2, name="pad")(x)  # 32x32
    x = L.Conv2D(8, 3, dilation_rate=2, name="dilated")(x)  # 28x28x8
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)  # 14x14
    x = L.Conv2D(16, 3, padding="same", groups=2, name="grouped")(x)
    x = L.GroupNormalization(groups=4, name="group_norm")(x)
    x = L.LeakyReLU(0.1, name="leaky")(x)
    x = L.SpatialDropout2D(0.1, name="spatial_drop")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)  # 7x7
    x = L.UpSampling2D(2, name="upsample")(x)  # 14x14
    x = L.Cropping2D(1, name="crop")(x)  # 12x12
    x = L.Conv2D(16, 3, strides=2, activation="relu", name="strided")(x)  # 5x5
    x = L.GlobalMaxPooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="conv_variants")


ZOO: dict[str, Callable[[], keras.Model]] = {
    "mlp_bn": mlp_bn, "resnet": resnet, "transformer": transformer, "densenet": densenet,
    "mobilenetv2": mobilenetv2, "efficientnet": efficientnet, "mobile_seq": mobile_seq, "conv1d_lstm": conv1d_lstm,
    "gru_rnn": gru_rnn, "multi_merge": multi_merge, "embedding": embedding, "wrappers": wrappers,
    "conv_variants": conv_variants}
APPLICATIONS = ("mobilenetv2", "efficientnet")  # nest a keras.applications backbone: seconds to build, big


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether the model returns probabilities (its last layer is a softmax), so its loss takes no logits."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return isinstance(last, L.Softmax) or getattr(activation, "__name__", None) == "softmax"


def mnist(n_train: int = 2000, n_test: int = 500, path: Path | str = DATA
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): the first images of the shipped MNIST, uint8 ``(N, 28, 28)``."""
    with np.load(path) as data:
        return (data["x_train"][:n_train], data["y_train"][:n_train], data["x_test"][:n_test],
                data["y_test"][:n_test])


def feed(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """``x`` (``(N, 28, 28)`` pixels) shaped for the model's input: a channel axis added if it takes one."""
    return x[..., None] if len(model.input_shape) == 4 and x.ndim == 3 else x


def save(model: keras.Model, path: Path | str) -> Path:
    """``model.save(path)`` (a ``.keras`` file), creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def compile_for(model: keras.Model, lr: float = 1e-3) -> keras.Model:
    """Adam and sparse categorical crossentropy (from logits unless the model ends in softmax), accuracy."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not ends_in_softmax(model))
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
    return model


def build_trained(name: str, path: Path | str | None, x: np.ndarray, y: np.ndarray, epochs: int = 1,
                  batch_size: int = 64, seed: int = 0, verbose: int = 0,
                  callbacks: list[keras.callbacks.Callback] | None = None) -> keras.Model:
    """ZOO[name] built with ``seed``, compiled (:func:`compile_for`), fit on ``(x, y)`` (``(N, 28, 28)`` pixels,
    integer labels) for ``epochs`` and, when ``path`` is given, saved there as a ``.keras`` file. Returns the
    trained model."""
    keras.utils.set_random_seed(seed)
    model = compile_for(ZOO[name]())
    model.fit(feed(model, x), y, epochs=epochs, batch_size=batch_size, verbose=verbose, callbacks=callbacks)
    if path is not None:
        save(model, path)
    return model
