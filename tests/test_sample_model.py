"""The shipped sample: its masks belong to its images, and FullGrad's maps point at the shapes
(the showcase a newcomer checks by eye; tools/showcase_sample.py measures it in full)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fg_onnx
from fg_onnx.evaluation.localisation import localisation
from fg_onnx.vision.images import load_image

pytest.importorskip("torch", reason="tools/make_sample_model.py imports torch")

import make_sample_model  # tools/ is on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
MODEL = SAMPLES / "shapes_cnn.onnx"
# The model before global max pooling reached 0.70 on these six images, this one 0.89
# (README's localisation table, tools/evaluate_sample.py).
MASK_AUC_BAR = 0.8


def _masks() -> dict[str, np.ndarray]:
    return {path.stem: load_image(path) for path in sorted((SAMPLES / "masks").glob("*"))}


def test_every_sample_image_has_a_binary_non_empty_mask_of_its_size() -> None:
    images = {path.stem: load_image(path) for path in sorted((SAMPLES / "images").glob("*"))}
    masks = _masks()
    assert sorted(masks) == sorted(images)
    for stem, mask in masks.items():
        assert mask.shape == images[stem].shape, stem
        assert set(np.unique(mask).tolist()) == {0, 255}, stem
        assert (mask[..., 0] == mask[..., 2]).all(), stem


def test_the_masks_are_the_shapes_the_generator_drew() -> None:
    rng = np.random.default_rng(make_sample_model.SAMPLE_SEED)
    masks = _masks()
    for name, label, size, distractor in make_sample_model.SAMPLES:
        drawn = make_sample_model.draw(label, rng, size, distractor)
        np.testing.assert_array_equal(masks[Path(name).stem][..., 0] > 127, drawn.mask)


def test_fullgrad_points_at_the_shapes_of_the_samples() -> None:
    names = [name for name, *_ in make_sample_model.SAMPLES]
    fullgrad = fg_onnx.FullGrad(str(MODEL), device="cpu")
    batch = fg_onnx.load_batch([str(SAMPLES / "images" / n) for n in names], fullgrad)
    maps = fullgrad.explain(batch).saliency
    masks = _masks()
    found = localisation(maps, [masks[Path(n).stem][..., 0] > 127 for n in names])
    assert found is not None and found.images == len(names)
    assert found.mask_auc > MASK_AUC_BAR
