"""Does a map reflect the model at all? Adebayo et al.'s sanity checks (NeurIPS 2018).

Model-parameter randomisation: the layers (nodes with constant weights: Conv, ConvTranspose,
Gemm, MatMul with a constant operand, normalisation scale and bias; an exporter's folded
BatchNorm is part of its Conv) get their weights redrawn in the ONNX file, Gaussian with the
tensor's own mean and standard deviation, seeded. Cascading: from the output layer down to
the input, one layer more per step; independent: one layer at a time. Each randomised model
is augmented and explained on the same images and classes, and each map is compared with the
original model's: Spearman rank correlation of |map| (and of the signed map, for a method
whose map has a sign) and SSIM, averaged over the images. A map that barely changes when the
weights it should explain are gone does not explain them. The random-logit test compares
the map of the explained class with that of a random other class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from fg_onnx.errors import FgOnnxError, UnsupportedModelError
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.graph.info import FLOAT_TYPES
from fg_onnx.graph.load import ModelSource, load_model
from fg_onnx.graph.normalize import normalize
from fg_onnx.methods import Explainer, MethodParams
from fg_onnx.runtime.providers import Device

WEIGHT_OPS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1),
              "BatchNormalization": (1, 2), "LayerNormalization": (1, 2),
              "InstanceNormalization": (1, 2), "GroupNormalization": (1, 2)}
"""Layer ops and the inputs that hold their weights (MatMul: whichever is constant)."""
SSIM_WINDOW = 7
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Layer:
    """A node with constant weights."""

    name: str
    op_type: str
    weights: tuple[str, ...]


@dataclass
class Similarity:
    """How alike two sets of maps are, averaged over the images."""

    spearman_abs: float
    spearman: float | None
    """Of the signed maps; None for a method whose maps have no sign."""
    ssim: float


@dataclass
class SanityStep:
    """One randomised model: its layers, and each method's similarity to the original."""

    randomised: list[str]
    similarity: dict[str, Similarity]


@dataclass
class Sanity:
    """The results of :func:`sanity_checks`."""

    images: int
    methods: list[str]
    layers: list[Layer]
    cascading: list[SanityStep] = field(default_factory=list)
    independent: list[SanityStep] = field(default_factory=list)
    random_logit: dict[str, Similarity] = field(default_factory=dict)
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """Per method, the first image's map for the original and each cascading step."""


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """The model's layers in graph order (input to output)."""
    weights = {t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    layers = []
    for index, node in enumerate(model.graph.node):
        slots = WEIGHT_OPS.get(node.op_type)
        if slots is None:
            continue
        held = tuple(node.input[i] for i in slots if i < len(node.input) and
                     node.input[i] in weights)
        if node.op_type == "MatMul" and len(held) != 1:
            continue  # two activations (attention scores) or two constants (folded)
        if held:
            layers.append(Layer(node.name or f"{node.op_type}_{index}", node.op_type, held))
    return layers


def randomised(model: onnx.ModelProto, layers: Sequence[Layer], seed: int) -> onnx.ModelProto:
    """A copy of ``model`` whose ``layers`` have weights redrawn (same shape, Gaussian with
    each tensor's own mean and standard deviation)."""
    names = {name for layer in layers for name in layer.weights}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rng = np.random.default_rng(seed)
    for tensor in copy.graph.initializer:
        if tensor.name in names:
            value = numpy_helper.to_array(tensor).astype(np.float64)
            drawn = rng.normal(value.mean(), value.std(), value.shape).astype(
                numpy_helper.to_array(tensor).dtype)
            tensor.CopyFrom(numpy_helper.from_array(drawn, tensor.name))
    return copy


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two flattened maps (ties: mean ranks); 0 where one is
    constant."""
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(np.nan_to_num(values.astype(np.float64)),
                                   return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return np.asarray(((ends - counts + 1 + ends) / 2)[inverse])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The mean structural similarity of two maps, each scaled to [0, 1] first (a map's
    scale is not what it says), with a 7x7 uniform window."""
    x, y = unit_range(a), unit_range(b)

    def mean(v: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.blur(v, (SSIM_WINDOW, SSIM_WINDOW), borderType=cv2.BORDER_REFLECT))

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    index = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / (
        (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    return float(index.mean())


def unit_range(value: np.ndarray) -> np.ndarray:
    """``value`` scaled to [0, 1] (zeros where it is constant), NaN as 0."""
    v = np.nan_to_num(value.astype(np.float64))
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def similarity(original: np.ndarray, other: np.ndarray, signed: bool) -> Similarity:
    """The mean similarity over images of two [N, H, W] sets of maps."""
    pairs = list(zip(original, other, strict=True))
    return Similarity(
        float(np.mean([spearman(np.abs(a), np.abs(b)) for a, b in pairs])),
        float(np.mean([spearman(a, b) for a, b in pairs])) if signed else None,
        float(np.mean([ssim(a, b) for a, b in pairs])))


@dataclass(frozen=True)
class SanityConfig:
    """What the checks run."""

    methods: tuple[str, ...]
    seed: int = 0
    params: MethodParams = field(default_factory=MethodParams)
    options: AugmentOptions | None = None
    device: Device = "auto"
    batch_size: int = 16


def sanity_checks(model: ModelSource, batch: np.ndarray, config: SanityConfig,
                  progress: Progress | None = None) -> Sanity:
    """Both randomisation tests and the random-logit test, for every method of ``config``."""
    if len(batch) == 0:
        raise FgOnnxError("no images to check")
    original = normalize(load_model(model))
    layers = find_layers(original)
    if not layers:
        raise UnsupportedModelError("the model has no layer with constant weights (Conv, "
                                    "Gemm, MatMul by a constant, normalisation) to randomise")
    report = progress or (lambda _: None)
    maps, targets, classes = _original_maps(original, batch, config)
    result = Sanity(len(batch), list(config.methods), layers,
                    maps={m: [maps[m][0]] for m in config.methods})
    steps = len(layers)
    for depth in range(1, steps + 1):
        chosen = layers[steps - depth:]
        report(f"cascading randomisation {depth}/{steps}: down to {chosen[0].name}")
        step, step_maps = _step(original, chosen, batch, targets, maps, config,
                                config.seed + depth)
        result.cascading.append(step)
        for method in config.methods:
            result.maps[method].append(step_maps[method][0])
    for index, layer in enumerate(layers):
        report(f"independent randomisation {index + 1}/{steps}: {layer.name}")
        step, _ = _step(original, [layer], batch, targets, maps, config,
                        config.seed + 1000 + index)
        result.independent.append(step)
    report("random-logit test")
    result.random_logit = _random_logit(original, batch, targets, classes, maps, config)
    return result


def _original_maps(model: onnx.ModelProto, batch: np.ndarray, config: SanityConfig,
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, int | None]:
    """Every method's maps of the original model; the (predicted) classes they explain and
    the class count, when the model fixes it."""
    maps: dict[str, np.ndarray] = {}
    targets: np.ndarray | None = None
    classes: int | None = None
    for method in config.methods:
        explainer = Explainer(model, method, params=config.params, device=config.device,
                              batch_size=config.batch_size, options=config.options)
        result = explainer.explain(batch, None if targets is None else targets.tolist())
        targets, classes = np.asarray(result.targets), explainer.session.classes
        maps[method] = _finite(result.saliency, method, "the original model")
    assert targets is not None
    return maps, targets, classes


def _signed(maps: np.ndarray) -> bool:
    """Whether a method's maps have a sign (every map of the method table is >= 0 today:
    ψ sums, magnitudes, ReLUs; a signed one gets its signed correlation too)."""
    return bool(np.any(maps < 0))


def _finite(maps: np.ndarray, method: str, model: str) -> np.ndarray:
    if not np.all(np.isfinite(maps)):
        raise FgOnnxError(f"{method} gives NaN/Inf maps on {model}; it cannot be compared")
    return maps


def _step(original: onnx.ModelProto, layers: Sequence[Layer], batch: np.ndarray,
          targets: np.ndarray, maps: dict[str, np.ndarray], config: SanityConfig,
          seed: int) -> tuple[SanityStep, dict[str, np.ndarray]]:
    model = randomised(original, layers, seed)
    step_maps, similar = {}, {}
    for method in config.methods:
        explainer = Explainer(model, method, params=config.params, device=config.device,
                              batch_size=config.batch_size, options=config.options)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            saliency = explainer.explain(batch, targets.tolist()).saliency
        step_maps[method] = _finite(saliency, method, f"the model with {layers[0].name} "
                                    "randomised")
        similar[method] = similarity(maps[method], saliency, _signed(maps[method]))
    return SanityStep([layer.name for layer in layers], similar), step_maps


def _random_logit(model: onnx.ModelProto, batch: np.ndarray, targets: np.ndarray,
                  classes: int | None, maps: dict[str, np.ndarray],
                  config: SanityConfig) -> dict[str, Similarity]:
    """The map of a random class other than the explained one, against the explained one's."""
    if classes is None or classes < 2:
        return {}
    rng = np.random.default_rng(config.seed)
    others = (targets + rng.integers(1, classes, len(targets))) % classes
    result = {}
    for method in config.methods:
        explainer = Explainer(model, method, params=config.params, device=config.device,
                              batch_size=config.batch_size, options=config.options)
        other = explainer.explain(batch, others.tolist()).saliency
        result[method] = similarity(maps[method], other, _signed(maps[method]))
    return result
