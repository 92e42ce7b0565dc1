"""Keras models of the model matrix, converted with tf2onnx (NHWC input, folded BatchNorm).

Needs tensorflow, keras 3 and tf2onnx. tf2onnx converts a ``tf.function`` around the Keras
model; its gradient reference is TF's GradientTape on the logits (the final Dense layer's
softmax switched off while taping).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
import tf2onnx
from matrix_checks import BATCH, CLASSES, MatrixResult, ModelSpec, check_exported, new_result

EXPORTERS = ("tf2onnx",)
OPSET = 17
VERSIONS = f"tensorflow {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__}"
layers = keras.layers


def _conv_bn_relu(x: object, filters: int, stride: int = 1) -> object:
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization()(x))


def resnet_like(size: int = 32) -> keras.Model:
    """Conv-BN-ReLU stem, MaxPool, two residual blocks (one with a 1x1 projection), GAP."""
    image = keras.Input((size, size, 3))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(_conv_bn_relu(image, 16))
    for filters, stride in ((16, 1), (32, 2)):
        h = _conv_bn_relu(x, filters, stride)
        h = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(h))
        if stride != 1:
            x = layers.Conv2D(filters, 1, strides=stride)(x)
        x = layers.ReLU()(layers.Add()([x, h]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(CLASSES)(x), name="resnet_like")


def mobilenet_v2(size: int = 96) -> keras.Model:
    """keras.applications.MobileNetV2 (alpha 0.35) with random weights and a softmax head."""
    return keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35,
                                          weights=None, classes=CLASSES)


def dense_softmax_cnn(size: int = 32) -> keras.Model:
    """Conv, MaxPool, Conv, Flatten, Dense + ReLU, Dense with softmax."""
    image = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, activation="relu", padding="same")(image)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = layers.Dense(32, activation="relu")(layers.Flatten()(x))
    return keras.Model(image, layers.Dense(CLASSES, activation="softmax")(x), name="cnn")


FAST = [
    ModelSpec("keras-resnet-like", "keras-resnet", resnet_like, 32, True, "fast"),
    ModelSpec("keras-mobilenet-v2-0.35", "keras-mobilenet_v2", mobilenet_v2, 96, False, "fast"),
    ModelSpec("keras-cnn-dense-softmax", "keras-cnn", dense_softmax_cnn, 32, True, "fast"),
]
SLOW: list[ModelSpec] = []


def build_model(spec: ModelSpec) -> keras.Model:
    """The model with seeded weights, non-trivial BatchNorm statistics and biases."""
    keras.utils.set_random_seed(0)
    model = spec.build()
    assert isinstance(model, keras.Model)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.75, 1.25, c), rng.uniform(-0.1, 0.1, c),
                               rng.uniform(-0.1, 0.1, c), rng.uniform(0.75, 1.25, c)])
        elif isinstance(layer, layers.Conv2D | layers.Dense) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.uniform(-0.1, 0.1, bias.shape).astype(bias.dtype)])
    return model


def sample_input(spec: ModelSpec, seed: int = 0) -> np.ndarray:
    """Deterministic float32 [BATCH, size, size, 3] input."""
    rng = np.random.default_rng(2 + seed)
    return rng.standard_normal((BATCH, spec.size, spec.size, 3)).astype(np.float32)


def export(model: keras.Model, spec: ModelSpec, path: Path) -> Path:
    """Converts ``model`` with tf2onnx (input ``image``, batch dimension dynamic)."""
    signature = (tf.TensorSpec((None, spec.size, spec.size, 3), tf.float32, name="image"),)
    function = tf.function(lambda image: model(image, training=False))
    tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET,
                                  output_path=str(path))
    return path


def tf_reference(model: keras.Model, x: np.ndarray,
                 targets: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's output and GradientTape's ∂(Σ_n logits[n, targets[n]])/∂x (float32)."""
    output = model(x, training=False).numpy()
    head = model.layers[-1]
    activation = head.activation
    head.activation = keras.activations.linear  # logits: the ONNX side skips the softmax
    try:
        image = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(image)
            logits = model(image, training=False)
            score = tf.reduce_sum(tf.gather(logits, targets, axis=1, batch_dims=1))
        grad = tape.gradient(score, image).numpy()
    finally:
        head.activation = activation
    return output, {"float32": grad}


def run_one(spec: ModelSpec, exporter: str, folder: Path) -> MatrixResult:
    """Builds, converts and checks one model; errors are recorded, not raised."""
    result = new_result(spec, exporter)
    try:
        model = build_model(spec)
        path = export(model, spec, folder / f"{spec.name}.{exporter}.onnx")
        return check_exported(path, functools.partial(tf_reference, model),
                              functools.partial(sample_input, spec), result)
    except Exception as exc:  # the matrix reports every failure instead of stopping
        lines = str(exc).strip().splitlines()
        result.error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        traceback.print_exc(file=sys.stderr)
        return result
