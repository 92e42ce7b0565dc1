"""Measures what the sample model's maps show: faithfulness, localisation against the
generator's shape masks, sanity (randomisation tests), whether the model uses the background,
and which terms of FullGrad's map carry the heat off the shape.

Images: the 6 shipped samples (files in sample_models/images, masks in sample_models/masks,
or drawn again by the generator where a model predates the masks) and ``--count`` held-out
images drawn by the generator with seed 2024 (a seed the model was neither trained, tested
nor sampled with). Deterministic for a given model and onnxruntime build.

Usage: ``python tools/showcase_sample.py [MODEL] [-o results.json]`` (prints the findings;
tools/evaluate_sample.py puts them into README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from make_sample_model import PREPROCESS, RENDER_SIZES, SAMPLE_SEED, SAMPLES
from shapes_world import CLASSES, Drawing, draw

import fg_onnx
from fg_onnx.evaluation import Evaluation, evaluate, report
from fg_onnx.evaluation.localisation import localisation, resize_mask
from fg_onnx.evaluation.sanity import SanityConfig, sanity_checks
from fg_onnx.fullgrad.aggregate import EPSILON
from fg_onnx.fullgrad.contract import METADATA_KEY, tap_output
from fg_onnx.vision.images import load_image
from fg_onnx.vision.preprocess import preprocess_batch

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"
MASKS = ROOT / "sample_models" / "masks"
SEED = 2024  # the model was trained, tested and sampled with seeds 1, 2 and 3
METHODS = ("fullgrad", "simple-fullgrad", "gradient", "gradient-x-input", "grad-cam",
           "grad-cam++", "smoothgrad", "smooth-fullgrad", "integrated-gradients")
SANITY_METHODS = METHODS[:6]  # the in-graph maps: the noise-averaged ones cost 25-32 runs
SANITY_IMAGES = 32


@dataclasses.dataclass
class Held:
    """Drawn images with their classes and masks."""

    labels: np.ndarray
    drawings: list[Drawing]
    images: list[np.ndarray]

    @property
    def masks(self) -> list[np.ndarray]:
        return [d.mask for d in self.drawings]


def held_out(count: int, seed: int = SEED) -> Held:
    """``count`` class-balanced images drawn like the training data (evaluate_sample's set)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(CLASSES))
    drawings = []
    for label in labels:
        size = int(rng.choice(RENDER_SIZES))
        drawings.append(draw(CLASSES[label], rng, size, distractor=bool(rng.random() < 0.5)))
    return Held(labels, drawings, [d.compose() for d in drawings])


def shipped() -> tuple[list[str], np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The shipped sample files: names, classes, images as read, and their masks."""
    rng = np.random.default_rng(SAMPLE_SEED)
    names, labels, images, masks = [], [], [], []
    for name, label, size, distractor in SAMPLES:
        drawn = draw(label, rng, size, distractor)
        mask_file = MASKS / f"{Path(name).stem}.png"
        mask = load_image(mask_file)[..., 0] > 127 if mask_file.exists() else drawn.mask
        names.append(name)
        labels.append(CLASSES.index(label))
        images.append(load_image(IMAGES / name))
        masks.append(mask)
    return names, np.asarray(labels), images, masks


def batch_of(images: list[np.ndarray]) -> np.ndarray:
    return preprocess_batch(images, PREPROCESS)


def logits_of(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {"image": batch[i:i + 64]})[0]
                           for i in range(0, len(batch), 64)])


def background_use(model: Path, held: Held) -> dict[str, float]:
    """Accuracy and the drawn class's logit as drawn, on a flat background (each image's
    mean background colour), on another image's background, and with the shape removed."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    n = len(held.drawings)

    def flat(d: Drawing) -> np.ndarray:
        return np.broadcast_to(d.background.reshape(-1, 3).mean(0), d.background.shape)

    def swapped(i: int) -> np.ndarray:
        other = held.drawings[(i + 1) % n].background
        size = held.drawings[i].background.shape[:2]
        return cv2.resize(other, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    variants = {
        "drawn": held.images,
        "flat background": [d.compose(flat(d)) for d in held.drawings],
        "other background": [d.compose(swapped(i)) for i, d in enumerate(held.drawings)],
        "shape removed": [d.compose(shape=False) for d in held.drawings],
    }
    found: dict[str, float] = {}
    rows = np.arange(n)
    drawn_logit = None
    for name, images in variants.items():
        logits = logits_of(session, batch_of(images))
        found[f"accuracy: {name}"] = float((logits.argmax(1) == held.labels).mean())
        own = logits[rows, held.labels]
        if drawn_logit is None:
            drawn_logit = own
        found[f"class logit / drawn: {name}"] = float(np.median(own / drawn_logit))
    return found


def psi_map(term: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One term's ψ(|v|) summed over channels and resized to ``size`` ([N, H, W]),
    as fg_onnx.fullgrad.aggregate computes it in-graph."""
    v = np.abs(term.astype(np.float64))
    flat = v.reshape(len(v), -1)
    low = flat.min(1)[:, None, None]
    span = flat.max(1)[:, None, None] - low
    summed = ((v - low[:, None]) / (span[:, None] + EPSILON)).sum(1)
    return np.stack([_align_corners(m, size) for m in summed])


def _align_corners(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with aligned corners, as the in-graph map's Resize."""
    h, w = image.shape
    ys, xs = (np.linspace(0, n - 1, m) for n, m in ((h, size[0]), (w, size[1])))
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def fullgrad_terms(model: Path, batch: np.ndarray, masks: list[np.ndarray],
                   ) -> list[dict[str, Any]]:
    """Per term of the FullGrad map (the input term x·∇x, then each bias tap in graph order):
    its share of the map's total mass, its share of its own mass on the shape, and its mask
    AUC; the last row is the whole map (checked against fg_saliency)."""
    augmented = fg_onnx.augment(str(model), components=True)
    facts = json.loads(next(p.value for p in augmented.metadata_props
                            if p.key == METADATA_KEY))
    taps = facts["components"]
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = ["fg_saliency", "fg_input_grad", *(tap_output(i) for i in range(len(taps)))]
    outputs = session.run(names, {"image": batch,
                                  "fg_target": np.full(len(batch), -1, np.int64)})
    size = batch.shape[2:]
    fitted = [resize_mask(m, size) for m in masks]
    terms = [("input x·∇x", size[-1], psi_map(batch * outputs[1], size))]
    terms += [(f"{t['op_type']} {t['node']} ({t['kind']})", v.shape[-1], psi_map(v, size))
              for t, v in zip(taps, outputs[2:], strict=True)]
    total = sum(m for _, _, m in terms)
    assert isinstance(total, np.ndarray)
    gap = float(np.abs(total - outputs[0]).max() / np.abs(outputs[0]).max())
    assert gap < 1e-3, f"the terms do not add up to fg_saliency ({gap:.1e})"
    rows = []
    for name, resolution, term in [*terms, ("FullGrad map (sum)", size[-1], total)]:
        found = localisation(term, fitted)
        assert found is not None
        rows.append({"term": name, "share_of_map": float(term.sum() / total.sum()),
                     "mass_on_shape": found.relevance_mass, "mask_auc": found.mask_auc,
                     "resolution": int(resolution)})
    return rows


def input_attribution(model: Path, batch: np.ndarray, masks: list[np.ndarray],
                      ) -> dict[str, float]:
    """Completeness split by place: the share of Σ x·∇x (signed, the pixels' part of the
    logit) that the background pixels carry, and the bias part's share of the logit."""
    augmented = fg_onnx.augment(str(model))
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    grad, score, bias = session.run(["fg_input_grad", "fg_score", "fg_bias_total"],
                                    {"image": batch,
                                     "fg_target": np.full(len(batch), -1, np.int64)})
    pixels = (batch * grad).sum(1)
    fitted = np.stack([resize_mask(m, pixels.shape[1:]) for m in masks])
    outside = (pixels * ~fitted).sum((1, 2))
    inside = (pixels * fitted).sum((1, 2))
    return {"input part / logit": float(np.median((inside + outside) / score)),
            "background part / logit": float(np.median(outside / score)),
            "shape part / logit": float(np.median(inside / score)),
            "bias part / logit": float(np.median(bias / score))}


def measure(model: Path, count: int) -> tuple[dict[str, Any], Evaluation]:
    """Everything, as JSON-ready values (the held-out evaluation's markdown under
    ``evaluation_markdown``), and the held-out evaluation itself (for its plot)."""
    held = held_out(count)
    batch = batch_of(held.images)
    names, labels, images, masks = shipped()
    samples = batch_of(images)
    evaluation = evaluate(str(model), batch, METHODS, device="cpu", batch_size=32,
                          masks=held.masks)
    on_samples = evaluate(str(model), samples, METHODS, device="cpu", masks=masks)
    sanity = sanity_checks(str(model), batch[:SANITY_IMAGES],
                           SanityConfig(methods=SANITY_METHODS, device="cpu"))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return {
        "model": str(model),
        "evaluation_markdown": report.markdown(evaluation),
        "held_out": count,
        "evaluation": dataclasses.asdict(evaluation),
        "samples": {"names": names,
                    "correct": (logits_of(session, samples).argmax(1) == labels).tolist(),
                    "localisation": {r.method: dataclasses.asdict(r.localisation)
                                     for r in on_samples.results if r.localisation},
                    "per_image": _per_image(model, samples, masks)},
        "sanity": {"images": sanity.images,
                   "cascading_last": {m: sanity.cascading[-1].similarity[m].spearman_abs
                                      for m in sanity.methods},
                   "cascading_first": {m: sanity.cascading[0].similarity[m].spearman_abs
                                       for m in sanity.methods},
                   "random_logit": {m: s.spearman_abs for m, s in sanity.random_logit.items()},
                   "layers": [layer.name for layer in sanity.layers]},
        "background": background_use(model, held),
        "terms": fullgrad_terms(model, batch, held.masks),
        "attribution": input_attribution(model, batch, held.masks),
    }, evaluation


def _per_image(model: Path, batch: np.ndarray, masks: list[np.ndarray],
               ) -> list[dict[str, float]]:
    """FullGrad on each shipped image: peak on the shape, mean inside / outside, the share of
    the top-10 % pixels on the shape, and the mask's share of the image."""
    maps = fg_onnx.FullGrad(str(model), device="cpu").explain(batch).saliency
    rows = []
    for saliency, mask in zip(maps, masks, strict=True):
        fitted = resize_mask(mask, saliency.shape)
        top = saliency >= np.quantile(saliency, 0.9)
        rows.append({"peak_on_shape": bool(fitted.ravel()[int(np.argmax(saliency))]),
                     "inside_over_outside": float(saliency[fitted].mean() /
                                                  saliency[~fitted].mean()),
                     "top10_on_shape": float(fitted[top].mean()),
                     "shape_area": float(fitted.mean())})
    return rows


def findings(found: dict[str, Any]) -> str:
    """The numbers as short markdown."""
    lines = [f"model: {found['model']}", "", "shipped samples (FullGrad):"]
    for name, row in zip(found["samples"]["names"], found["samples"]["per_image"],
                         strict=True):
        lines.append(f"- {name}: peak on shape {row['peak_on_shape']}, inside/outside "
                     f"{row['inside_over_outside']:.2f}, top-10 % on shape "
                     f"{100 * row['top10_on_shape']:.0f} % (shape {100 * row['shape_area']:.0f} %)")
    lines += ["", "localisation, held-out (pointing, mass, rank, mask AUC):"]
    for r in found["evaluation"]["results"]:
        loc = r["localisation"]
        lines.append(f"- {r['method']}: {loc['pointing_game']:.2f} {loc['relevance_mass']:.2f} "
                     f"{loc['relevance_rank']:.2f} {loc['mask_auc']:.3f}")
    lines += ["", "localisation, shipped samples (mask AUC):"]
    lines += [f"- {m}: {loc['mask_auc']:.3f} (pointing {loc['pointing_game']:.2f})"
              for m, loc in found["samples"]["localisation"].items()]
    lines += ["", "sanity, Spearman |map| after randomising every layer / random logit:"]
    lines += [f"- {m}: {v:.2f} / {found['sanity']['random_logit'].get(m, float('nan')):.2f}"
              for m, v in found["sanity"]["cascading_last"].items()]
    lines += ["", "background use:"]
    lines += [f"- {k}: {v:.3f}" for k, v in found["background"].items()]
    lines += [f"- {k}: {v:.3f}" for k, v in found["attribution"].items()]
    lines += ["", "FullGrad terms (share of map, mass on shape, mask AUC):"]
    lines += [f"- {t['term']}: {t['share_of_map']:.3f} {t['mass_on_shape']:.3f} "
              f"{t['mask_auc']:.3f}" for t in found["terms"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=MODEL)
    parser.add_argument("-o", "--output", type=Path, help="write the numbers as JSON here")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    found, _ = measure(args.model, args.count)
    if args.output:
        args.output.write_text(json.dumps(found, indent=1), encoding="utf-8")
    print(findings(found))


if __name__ == "__main__":
    main()
