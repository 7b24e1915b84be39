"""Built graph models for structural pruning (issue 28): a CIFAR ResNet-20 on 28x28 and ``keras.applications``
MobileNetV2 nested as a backbone. Like the zoo's chains (src/training/model.py) they take raw pixels (N, H, W)
0..255, scale them inside the model and return logits, with built-in layers only (plain ``keras.models.load_model``
opens their files).
"""

from __future__ import annotations

import keras
from keras import layers as L

# MobileNetV2 sets BatchNormalization momentum 0.999 (ImageNet's 1.2M images); trained from scratch on MNIST's 422
# steps per epoch, its moving statistics would still weigh their initial values by 0.999**(3*422) = 28% after 3 epochs.
MOBILENET_BN_MOMENTUM = 0.99


def _pixels(input_shape: list[int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(input, scaled image with a channel axis)."""
    inputs = keras.Input(tuple(input_shape), name="pixels")
    x = L.Reshape((*input_shape, 1), name="channels")(inputs) if len(input_shape) == 2 else inputs
    return inputs, L.Rescaling(1 / 255, name="scale")(x)


def resnet20(input_shape: list[int], n_classes: int, widths: list[int], blocks: int = 3) -> keras.Model:
    """He et al. (2016)'s CIFAR ResNet (ResNet-20 with ``blocks=3``): a 3x3 conv stem (``widths[0]``), a stage of
    ``blocks`` basic blocks per width (Conv-BN-ReLU-Conv-BN + shortcut, ReLU; the first block of every stage after
    the first strided, with a 1x1 projection and BN on its shortcut), global average pooling, Dense logits."""
    def block(x, filters: int, stride: int, name: str):
        y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(name=f"{name}_bn1")(y))
        y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = L.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            x = L.BatchNormalization(name=f"{name}_proj_bn")(x)
        return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([x, y]))

    inputs, x = _pixels(input_shape)
    x = L.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")(x)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    for stage, filters in enumerate(widths, start=1):
        for i in range(blocks):
            x = block(x, filters, 2 if stage > 1 and i == 0 else 1, f"s{stage}b{i + 1}")
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(n_classes, name="logits")(x), name="resnet20")


def mobilenetv2(input_shape: list[int], n_classes: int, alpha: float = 1.0, size: int = 32) -> keras.Model:
    """``keras.applications.MobileNetV2`` (``alpha``, ``weights=None``, no top) on the image zero-padded to
    ``size`` x ``size`` (28 -> 32: the smallest input it takes is 32), nested as the layer ``mobilenetv2``; global
    average pooling and Dense logits. BatchNormalization momentum :data:`MOBILENET_BN_MOMENTUM`."""
    inputs, x = _pixels(input_shape)
    pad_h, pad_w = size - x.shape[1], size - x.shape[2]
    if pad_h or pad_w:
        x = L.ZeroPadding2D(((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), name="pad")(x)
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, int(x.shape[-1])), alpha=alpha, weights=None,
                                              include_top=False, name="mobilenetv2")
    for layer in backbone.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = MOBILENET_BN_MOMENTUM
    x = L.GlobalAveragePooling2D(name="pool")(backbone(x))
    return keras.Model(inputs, L.Dense(n_classes, name="logits")(x), name="mobilenetv2_mnist")


ARCHITECTURES = {"resnet20": resnet20, "mobilenetv2": mobilenetv2}
