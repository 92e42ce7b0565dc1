"""Localisation metrics against ground-truth masks (fg_onnx/evaluation/localisation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fg_onnx.evaluation.localisation import image_metrics, localisation
from fg_onnx.vision.masks import resize_mask


def _square_mask() -> np.ndarray:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    return mask


def test_a_map_on_the_mask_scores_perfectly_and_its_inverse_badly() -> None:
    mask = _square_mask()
    on = mask.astype(np.float64) + 0.01 * np.random.default_rng(0).random((8, 8))
    pointing, mass, rank, auc = image_metrics(on, mask)
    assert (pointing, rank, auc) == (1.0, 1.0, 1.0)
    assert mass > 0.9
    off = image_metrics(1.0 - on, mask)
    assert off[0] == 0.0 and off[2] == 0.0 and off[3] == 0.0
    assert off[1] < 0.05


def test_values_by_hand() -> None:
    mask = np.array([[True, False], [False, False]])
    saliency = np.array([[2.0, 3.0], [1.0, -1.0]])
    pointing, mass, rank, auc = image_metrics(saliency, mask)
    assert pointing == 0.0  # the maximum (3) is outside
    assert mass == pytest.approx(2.0 / 6.0)  # positive relevance only
    assert rank == 0.0  # the one most salient pixel is outside
    assert auc == pytest.approx(2.0 / 3.0)  # 2 > 1 and 2 > -1, 2 < 3


def test_ties_count_half_and_a_constant_map_is_chance() -> None:
    mask = _square_mask()
    assert image_metrics(np.zeros((8, 8)), mask)[3] == pytest.approx(0.5)


def test_masks_of_another_size_are_resized_and_empty_or_missing_ones_skipped() -> None:
    big = np.zeros((16, 16), np.uint8)
    big[4:8, 4:8] = 255
    assert resize_mask(big, (8, 8)).tolist() == _square_mask().tolist()
    maps = np.stack([_square_mask().astype(float)] * 3)
    found = localisation(maps, [big, None, np.zeros((8, 8))])
    assert found is not None and found.images == 1 and found.mask_auc == 1.0
    assert localisation(maps, [None, None, None]) is None
