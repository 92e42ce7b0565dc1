"""Segmentation targets: a class's logits summed over its predicted mask, a given mask or a
box; the map lies in the region (the test model's logits are pixel-local)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from target_models import PixelSegmenter, exported

from fg_onnx.targets import TargetError, TargetRequest
from fg_onnx.targets.run import TargetExplainer


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> TargetExplainer:
    path = exported(PixelSegmenter(), tmp_path_factory.mktemp("seg") / "seg.onnx")
    return TargetExplainer(path, device="cpu")


def _batch(n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _mass_inside(saliency: np.ndarray, region: np.ndarray) -> float:
    positive = np.clip(saliency, 0, None)
    return float(positive[region].sum() / positive.sum())


def test_predicted_class_regions_sum_their_logits_and_hold_the_map(
        explainer: TargetExplainer) -> None:
    assert explainer.task == "segmentation"
    batch = _batch()
    logits = explainer.session.forward(batch)[explainer.explained]
    found = explainer.explain(batch, TargetRequest(top_k=2))
    for image, result in enumerate(found):
        predicted = logits[image].argmax(0)
        assert len(result.results) == 2
        for r in result.results:
            cls = int(r.fields["target"])
            region = predicted == cls
            assert cls != 0 and r.region is not None and np.array_equal(r.region, region)
            assert r.fields["pixels"] == int(region.sum())
            np.testing.assert_allclose(r.score, logits[image, cls][region].sum(), rtol=1e-4)
            assert r.completeness_error is not None and r.completeness_error < 1e-5
            assert _mass_inside(r.saliency, region) > 0.999


def test_a_given_mask_of_another_size_is_resized_and_an_empty_one_refused(
        explainer: TargetExplainer) -> None:
    batch = _batch(1)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 16:48] = 255  # [4:20, 8:24] at the output's 32x32
    found = explainer.explain(batch, TargetRequest(mask=mask, target=1))
    (r,) = found[0].results
    region = np.zeros((32, 32), bool)
    region[4:20, 8:24] = True
    assert r.fields["pixels"] == region.sum() and r.fields["box"] == [8.0, 4.0, 24.0, 20.0]
    logits = explainer.session.forward(batch)[explainer.explained]
    np.testing.assert_allclose(r.score, logits[0, 1][region].sum(), rtol=1e-4)
    assert _mass_inside(r.saliency, region) > 0.999
    with pytest.raises(TargetError, match="the mask is empty"):
        explainer.explain(batch, TargetRequest(mask=np.zeros((8, 8))))


def test_a_box_is_a_region_too(explainer: TargetExplainer) -> None:
    batch = _batch(1)
    (r,) = explainer.explain(batch, TargetRequest(box=(0, 0, 16, 8), target=2))[0].results
    assert r.fields["pixels"] == 16 * 8 and r.fields["target"] == 2
    assert r.region is not None and r.region[:8, :16].all()
    with pytest.raises(TargetError, match="class 3 is out of range"):
        explainer.explain(batch, TargetRequest(target=3))


def test_a_probability_map_explains_its_largest_components_by_their_logits(
        tmp_path: Path) -> None:
    import cv2
    from target_models import TextMap

    explainer = TargetExplainer(exported(TextMap(), tmp_path / "text.onnx"), device="cpu")
    assert explainer.task == "segmentation"
    assert explainer.explained != explainer.raw_output  # the logits before the Sigmoid
    batch = _batch(1)
    forward = explainer.session.forward(batch)
    probabilities = forward[explainer.raw_output][0, 0]
    logits = forward[explainer.explained][0, 0]
    count, labels = cv2.connectedComponents((probabilities > 0.5).astype(np.uint8),
                                            connectivity=8)
    sizes = sorted(((int((labels == k).sum()), k) for k in range(1, count)),
                   key=lambda pair: (-pair[0], pair[1]))  # ties: the first label first
    found = explainer.explain(batch, TargetRequest(top_k=2))[0].results
    assert [r.fields["pixels"] for r in found] == [size for size, _ in sizes[:2]]
    for r, (_, k) in zip(found, sizes, strict=False):
        region = labels == k
        np.testing.assert_allclose(r.score, logits[region].sum(), rtol=1e-4)
        assert r.completeness_error is not None and r.completeness_error < 1e-5
        assert _mass_inside(r.saliency, region) > 0.999
    (none,) = explainer.explain(batch, TargetRequest(threshold=1.0))
    assert none.results == [] and none.note == "no region above the threshold 1"
