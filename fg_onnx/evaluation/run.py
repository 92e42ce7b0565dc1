"""``evaluate``: every method's map on the same images, then both faithfulness tests."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fg_onnx.choices import Layout, spatial_axes
from fg_onnx.errors import FgOnnxError
from fg_onnx.evaluation.localisation import Localisation, localisation
from fg_onnx.evaluation.perturbation import (
    Images,
    PerturbationConfig,
    area_under,
    deletion_curve,
    insertion_curve,
    pixel_perturbation,
    pixel_ranks,
)
from fg_onnx.evaluation.scorer import Scorer
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.graph.load import ModelSource, load_model
from fg_onnx.methods import Explainer, MethodParams, get_method
from fg_onnx.runtime.providers import Device

RANDOM = "random"

Progress = Callable[[str, int, int], None]
"""(method, images done, images) as a method's tests proceed; 0 done when its maps start."""


@dataclass
class MethodResult:
    """Both tests for one method."""

    method: str
    perturbation: list[float]
    """Mean |Δf| / |f| per k (lower is better)."""
    deletion: list[float]
    """RISE deletion: mean class probability per step, most salient pixels removed first."""
    deletion_auc: float
    """Area under ``deletion``, in [0, 1] (lower is better)."""
    insertion: list[float]
    """RISE insertion: mean class probability per step, most salient pixels put back into
    the blurred image first."""
    insertion_auc: float
    """Area under ``insertion``, in [0, 1] (higher is better)."""
    seconds_per_image: float
    """Time to compute the maps (0 for the random baseline)."""
    completeness_error: float | None = None
    """The largest completeness error over the images (the check its method defines:
    fg_onnx.methods.registry.Method.completeness); None for methods without one."""
    localisation: Localisation | None = None
    """Against the ground-truth masks, where any were given (fg_onnx.evaluation.localisation)."""


@dataclass
class Evaluation:
    """The results of :func:`evaluate`."""

    images: int
    ks: list[float]
    fractions: list[float]
    fill: str
    results: list[MethodResult] = field(default_factory=list)


def evaluate(model: ModelSource, batch: np.ndarray, methods: Sequence[str], *,
             config: PerturbationConfig | None = None, params: MethodParams | None = None,
             options: AugmentOptions | None = None, device: Device = "auto",
             batch_size: int = 16, scorer: Scorer | None = None,
             masks: Sequence[np.ndarray | None] | None = None,
             progress: Progress | None = None) -> Evaluation:
    """Runs the pixel-perturbation, deletion and insertion tests on ``batch`` for each method
    and for a random pixel ranking (always first). Each image explains its predicted class.

    ``scorer`` (default: one opened on ``model``) scores the perturbed images. ``masks``
    (one per image, None where an image has none) adds the localisation metrics;
    ``progress`` hears how far each method is."""
    config = config or PerturbationConfig()
    names = [m for m in dict.fromkeys(methods) if m != RANDOM]
    for name in names:
        get_method(name)  # unknown names fail before any work
    if len(batch) == 0:
        raise FgOnnxError("no images to evaluate")
    if masks is not None and len(masks) != len(batch):
        raise FgOnnxError(f"got {len(masks)} masks for {len(batch)} images")
    proto = load_model(model)
    scorer = scorer or Scorer(proto, options, device=device, batch_size=max(batch_size, 64))
    logits = scorer(batch)
    targets = logits.argmax(1)
    # Only the explained (predicted) class is compared; a masked class may be -inf.
    broken = int((np.isnan(logits).any(1) | ~np.isfinite(
        logits[np.arange(len(batch)), targets])).sum())
    if broken:
        raise FgOnnxError(f"the model's predicted scores are NaN or Inf for {broken} of "
                          f"{len(batch)} image(s); the perturbation tests compare finite "
                          "scores (explain shows which images)")
    images = Images(np.ascontiguousarray(batch, np.float32), scorer.layout, targets,
                    logits[np.arange(len(batch)), targets])
    fill = "image mean" if config.fill is None else "value " + ",".join(
        f"{v:.3g}" for v in config.fill)
    result = Evaluation(len(batch), list(config.ks), config.fractions.tolist(), fill)
    rng = np.random.default_rng(config.seed)
    for name in [RANDOM, *names]:
        scores = _counted(scorer, name, len(batch), len(config.ks) + config.deletion_steps,
                          progress)
        started = time.perf_counter()
        error = None
        if name == RANDOM:
            maps = rng.random((len(batch), *_spatial(batch, scorer.layout)))
        else:
            explainer = Explainer(proto, name, params=params, device=device,
                                  batch_size=batch_size, options=_options_for(name, options))
            started = time.perf_counter()  # the maps, not the augmentation
            explanation = explainer.explain(images.batch, targets.tolist())
            maps = explanation.saliency
            if explanation.completeness_error is not None:
                error = float(np.max(explanation.completeness_error))
        seconds = 0.0 if name == RANDOM else (time.perf_counter() - started) / len(batch)
        ranks = pixel_ranks(maps, rng)
        deletion = deletion_curve(scores, images, ranks, config)
        insertion = insertion_curve(scores, images, ranks, config)
        result.results.append(MethodResult(
            name, pixel_perturbation(scores, images, ranks, config).tolist(),
            deletion.tolist(), area_under(deletion, config.fractions),
            insertion.tolist(), area_under(insertion, config.fractions), seconds, error,
            None if masks is None else localisation(maps, masks)))
    return result


def _counted(scorer: Scorer, method: str, images: int, copies_per_image: int,
             progress: Progress | None) -> Callable[[np.ndarray], np.ndarray]:
    """``scorer``, telling ``progress`` how many images' perturbed copies it has scored."""
    if progress is None:
        return scorer
    report = progress
    report(method, 0, images)
    scored = 0

    def scores(batch: np.ndarray) -> np.ndarray:
        nonlocal scored
        logits = scorer(batch)
        scored += len(batch)
        report(method, min(images, scored // copies_per_image), images)
        return logits

    return scores


def _options_for(name: str, options: AugmentOptions | None) -> AugmentOptions | None:
    """The CAM layer only for the CAM methods (the others refuse it)."""
    if options is None or "cam_layer" in get_method(name).settings:
        return options
    return dataclasses.replace(options, cam_layer=None)


def _spatial(batch: np.ndarray, layout: Layout) -> tuple[int, int]:
    return tuple(int(batch.shape[axis]) for axis in spatial_axes(layout))  # type: ignore[return-value]
