"""The faithfulness tests: pixel removal, metrics, the evaluate API and its outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import with_symbolic_dims

from fg_onnx.errors import FgOnnxError
from fg_onnx.evaluation import PerturbationConfig, evaluate, markdown, plot, to_json
from fg_onnx.evaluation.perturbation import (
    Images,
    area_under,
    blurred,
    class_probability,
    deletion_curve,
    insertion_curve,
    pixel_perturbation,
    pixel_ranks,
    removed_scores,
)
from fg_onnx.evaluation.scorer import Scorer
from fg_onnx.methods import MethodParams
from fg_onnx.vision.images import iter_image_paths, load_image
from fg_onnx.vision.preprocess import preprocess_batch, preset

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"


def pixel_sum(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose one score is the sum of all inputs."""
    return batch.reshape(len(batch), -1).sum(1, keepdims=True)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_removal_order_and_fill(layout: str) -> None:
    plane = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    batch = np.stack([plane, 10 * plane])[None]  # [1, 2, 2, 2]: two channels
    if layout == "nhwc":
        batch = batch.transpose(0, 2, 3, 1)
    images = Images(batch, layout, np.array([0]), np.array([110.0]))
    ranks = pixel_ranks(plane[None], np.random.default_rng(0))
    assert ranks.tolist() == [[0, 1, 2, 3]]
    counts = np.array([1, 2])
    least = removed_scores(pixel_sum, images, ranks, counts, (0.0, 0.0), most_first=False)
    most = removed_scores(pixel_sum, images, ranks, counts, (0.0, 0.0), most_first=True)
    assert least.tolist() == [[110 - 11, 110 - 33]]
    assert most.tolist() == [[110 - 44, 110 - 77]]
    mean_fill = removed_scores(pixel_sum, images, ranks, np.array([4]), None, most_first=True)
    assert mean_fill[0, 0] == pytest.approx(110.0)  # every pixel becomes its channel's mean


def test_ties_are_broken_randomly() -> None:
    flat = np.zeros((1, 10, 10))
    first = pixel_ranks(flat, np.random.default_rng(0))
    second = pixel_ranks(flat, np.random.default_rng(1))
    assert sorted(first[0].tolist()) == list(range(100))
    assert first[0].tolist() != second[0].tolist()


def test_metrics_on_a_model_that_ignores_unsalient_pixels() -> None:
    """f = sum of the top-left quarter; a map marking exactly it is perfect."""
    def quarter(batch: np.ndarray) -> np.ndarray:
        return batch[:, :, :4, :4].reshape(len(batch), -1).sum(1, keepdims=True)

    batch = np.random.default_rng(0).uniform(1, 2, (2, 1, 8, 8)).astype(np.float32)
    scores = quarter(batch)[:, 0]
    images = Images(batch, "nchw", np.zeros(2, np.int64), scores)
    perfect = np.zeros((2, 8, 8))
    perfect[:, :4, :4] = 1
    config = PerturbationConfig(ks=(10.0, 50.0), deletion_steps=4, fill=(0.0,))
    rng = np.random.default_rng(0)
    assert pixel_perturbation(quarter, images, pixel_ranks(perfect, rng), config).tolist() == [
        0.0, 0.0]
    inverted = pixel_perturbation(quarter, images, pixel_ranks(1 - perfect, rng), config)
    assert inverted[1] > 0.5


def test_bad_settings() -> None:
    with pytest.raises(FgOnnxError, match=r"k must be a percentage in \(0, 100\], got 0"):
        PerturbationConfig(ks=(0.0, 1.0))
    with pytest.raises(FgOnnxError, match="deletion-steps"):
        PerturbationConfig(deletion_steps=0)
    with pytest.raises(FgOnnxError, match="unknown method"):
        evaluate(SAMPLE, np.zeros((1, 3, 64, 64), np.float32), ["nope"])


def test_evaluate_the_sample_images(tmp_path: Path) -> None:
    paths = iter_image_paths([ROOT / "sample_models" / "images"])
    batch = preprocess_batch([load_image(p) for p in paths], preset("imagenet", (64, 64)))
    config = PerturbationConfig(ks=(1.0, 5.0, 10.0), deletion_steps=5)
    result = evaluate(SAMPLE, batch, ["fullgrad", "grad-cam", "random"], config=config,
                      params=MethodParams(samples=2, steps=4), device="cpu")
    assert [r.method for r in result.results] == ["random", "fullgrad", "grad-cam"]
    for row in result.results:
        assert len(row.perturbation) == 3 and np.all(np.isfinite(row.perturbation))
        assert len(row.deletion) == len(row.insertion) == 6
        assert 0 <= row.deletion_auc <= 1 and 0 <= row.insertion_auc <= 1
        assert row.insertion[-1] == pytest.approx(row.deletion[0])  # both: the clean image
    by_name = {r.method: r for r in result.results}
    # the paper's finding, on these six images: FullGrad's least salient pixels matter less
    assert np.mean(by_name["fullgrad"].perturbation) < np.mean(by_name["random"].perturbation)
    table = markdown(result)
    assert table.count("\n| ") == 4 and "| random |" in table and "6 images" in table
    assert '"deletion_auc"' in to_json(result) and '"insertion_auc"' in to_json(result)
    # RISE's insertion ranks FullGrad above a random order on these images. Deletion did too
    # for the sample model with global average pooling, but not for today's (max pooling):
    # removing scattered pixels breaks its max-pooled features as fast as removing the most
    # salient ones (0.29 vs 0.27 here; README's held-out table shows the same), so deletion
    # is no property of the model to test.
    assert by_name["fullgrad"].insertion_auc > by_name["random"].insertion_auc
    image = plot(result)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_a_fixed_batch_model_is_scored_and_evaluated() -> None:
    """A model fixed to one image per run: the scorer and every method run one at a time."""
    fixed = with_symbolic_dims(onnx.load(str(SAMPLE)), {"image": [1, 3, 64, 64]})
    batch = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    scores = Scorer(fixed, device="cpu")(batch)
    np.testing.assert_allclose(scores, Scorer(SAMPLE, device="cpu")(batch), rtol=1e-5,
                               atol=1e-6)
    config = PerturbationConfig(ks=(1.0, 10.0), deletion_steps=2)
    result = evaluate(fixed, batch, ["gradient"], config=config, device="cpu", batch_size=1)
    reference = evaluate(SAMPLE, batch, ["gradient"], config=config, device="cpu")
    assert [r.method for r in result.results] == ["random", "gradient"]
    np.testing.assert_allclose(result.results[0].perturbation,
                               reference.results[0].perturbation, rtol=1e-4)


def two_class(batch: np.ndarray) -> np.ndarray:
    """Logits [s, -s] with s the sum of the top-left quarter: p(class 0) = sigmoid(2 s)."""
    s = batch[:, :, :4, :4].reshape(len(batch), -1).sum(1)
    return np.stack([s, -s], 1)


def test_rise_deletion_and_insertion_on_a_known_model() -> None:
    batch = np.random.default_rng(0).uniform(1, 2, (2, 1, 8, 8)).astype(np.float32)
    images = Images(batch, "nchw", np.zeros(2, np.int64), two_class(batch)[:, 0])
    perfect = np.zeros((2, 8, 8))
    perfect[:, :4, :4] = 1
    config = PerturbationConfig(deletion_steps=4, fill=(0.0,))
    ranks = pixel_ranks(perfect, np.random.default_rng(0))
    deletion = deletion_curve(two_class, images, ranks, config)
    # the quarter (16 of 64 pixels) goes in the first step: p = sigmoid(0) = 1/2 from then on
    np.testing.assert_allclose(deletion[1:], 0.5, atol=1e-6)
    assert deletion[0] == pytest.approx(1.0, abs=1e-6)  # s >= 16: p(class 0) is 1
    insertion = insertion_curve(two_class, images, ranks, config)
    np.testing.assert_allclose(insertion[1:], 1.0, atol=1e-6)
    inverted = deletion_curve(two_class, images, pixel_ranks(1 - perfect, np.random.default_rng(0)),
                              config)
    assert area_under(deletion, config.fractions) < area_under(inverted, config.fractions)
    assert 0.0 <= area_under(inverted, config.fractions) <= 1.0


def test_class_probability_of_one_and_of_several_scores() -> None:
    single = class_probability(lambda b: b.reshape(len(b), -1)[:, :1])
    np.testing.assert_allclose(single(np.zeros((2, 1, 2, 2))), 0.5)
    several = class_probability(lambda b: np.array([[0.0, np.log(3.0)]]))
    np.testing.assert_allclose(several(np.zeros((1, 1))), [[0.25, 0.75]])


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_blur_keeps_layout_and_smooths(layout: str) -> None:
    batch = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    if layout == "nhwc":
        batch = batch.transpose(0, 2, 3, 1).copy()
    smooth = blurred(batch, layout)  # type: ignore[arg-type]
    assert smooth.shape == batch.shape
    assert smooth.std() < 0.5 * batch.std()
    np.testing.assert_allclose(smooth.mean(), batch.mean(), atol=0.05)


def test_localisation_with_masks_in_the_results_and_reports() -> None:
    batch = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    mask = np.zeros((32, 32), np.uint8)  # another size: resized to the map's
    mask[8:24, 8:24] = 1
    config = PerturbationConfig(ks=(10.0,), deletion_steps=2)
    result = evaluate(SAMPLE, batch, ["gradient"], config=config, device="cpu",
                      masks=[mask, None, np.zeros((64, 64))])
    for row in result.results:
        assert row.localisation is not None and row.localisation.images == 1
        assert 0 <= row.localisation.mask_auc <= 1
    text = to_json(result)
    assert all(f'"{key}"' in text for key in ("pointing_game", "relevance_mass",
                                               "relevance_rank", "mask_auc"))
    assert "| pointing game ↑ |" in markdown(result)
    with pytest.raises(FgOnnxError, match="2 masks for 3 images"):
        evaluate(SAMPLE, batch, ["gradient"], config=config, device="cpu", masks=[mask, mask])
