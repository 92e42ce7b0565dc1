"""Model-input numerics: presets, channel order, layout and resizing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fg_onnx.errors import FgOnnxError
from fg_onnx.vision.images import iter_image_paths, load_image
from fg_onnx.vision.preprocess import Preprocess, model_preprocess, preprocess_batch, preset

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


def _pixel_image(red: int, green: int, blue: int, height: int = 2, width: int = 3) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[...] = (red, green, blue)
    return image


def test_imagenet_values() -> None:
    batch = preprocess_batch([_pixel_image(255, 0, 128)], preset("imagenet", (2, 3)))
    assert batch.shape == (1, 3, 2, 3) and batch.dtype == np.float32
    # (1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225 worked out by hand
    expected = [2.2489083, -2.0357143, 0.4264924]
    np.testing.assert_allclose(batch[0, :, 1, 2], expected, rtol=1e-6)
    np.testing.assert_allclose(batch[0].reshape(3, -1).std(axis=1), 0, atol=1e-6)


def test_zero_one_and_raw_values() -> None:
    image = _pixel_image(51, 204, 0)
    np.testing.assert_allclose(
        preprocess_batch([image], preset("zero-one", (2, 3)))[0, :, 0, 0], [0.2, 0.8, 0.0],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(
        preprocess_batch([image], preset("raw", (2, 3)))[0, :, 0, 0], [51.0, 204.0, 0.0]
    )


def test_bgr_swaps_channels_and_the_preset_statistics() -> None:
    spec = preset("imagenet", (2, 3), bgr=True)
    assert spec.mean == (0.406, 0.456, 0.485) and spec.std == (0.225, 0.224, 0.229)
    batch = preprocess_batch([_pixel_image(255, 0, 128)], spec)
    np.testing.assert_allclose(batch[0, :, 0, 0], [0.4264924, -2.0357143, 2.2489083], rtol=1e-6)


def test_custom_mean_std_scale() -> None:
    spec = Preprocess((2, 3), mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), scale=1.0)
    batch = preprocess_batch([_pixel_image(12, 40, 0)], spec)
    np.testing.assert_allclose(batch[0, :, 0, 0], [1.0, 5.0, -6.0])


def test_nhwc_is_the_transpose_of_nchw() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (5, 7, 3), np.uint8) for _ in range(2)]
    nchw = preprocess_batch(images, preset("imagenet", (5, 7)))
    nhwc = preprocess_batch(images, preset("imagenet", (5, 7), layout="nhwc"))
    assert nchw.shape == (2, 3, 5, 7) and nhwc.shape == (2, 5, 7, 3)
    assert nhwc.flags.c_contiguous and nchw.flags.c_contiguous
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    assert nhwc[1, 4, 6, 0] == pytest.approx((images[1][4, 6, 0] / 255 - 0.485) / 0.229, 1e-6)


def test_bilinear_upscale_uses_half_pixel_centres() -> None:
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 1] = 100
    batch = preprocess_batch([image], preset("raw", (1, 4)))
    # output x samples source x = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (edges clamp)
    np.testing.assert_allclose(batch[0, 0, 0], [0, 25, 75, 100])


def test_halving_averages_two_by_two_blocks() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = np.array([[0, 40], [80, 120]])[..., None]
    image[2:, 2:] = 200
    batch = preprocess_batch([image], preset("raw", (2, 2), layout="nhwc"))
    np.testing.assert_allclose(batch[0, ..., 1], [[60, 0], [0, 200]])


def test_images_of_different_sizes_make_one_batch() -> None:
    images = [_pixel_image(1, 2, 3, 10, 20), _pixel_image(4, 5, 6, 64, 48)]
    batch = preprocess_batch(images, preset("raw", (8, 8)))
    assert batch.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(batch[1, :, 3, 3], [4, 5, 6])


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown preprocessing preset 'caffe'"):
        preset("caffe", (8, 8))
    with pytest.raises(ValueError, match="at least one image"):
        preprocess_batch([], preset("raw", (8, 8)))
    with pytest.raises(ValueError, match="image 1 must be RGB uint8"):
        preprocess_batch([_pixel_image(0, 0, 0), np.zeros((4, 4), np.uint8)], preset("raw", (4, 4)))
    with pytest.raises(ValueError, match="non-zero"):
        Preprocess((4, 4), std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="layout"):
        Preprocess((4, 4), layout="chw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="height, width"):
        Preprocess((0, 4))


def test_one_channel_is_the_grayscale_image_with_the_presets_averaged_values() -> None:
    spec = preset("imagenet", (2, 3), channels=1)
    assert spec.mean == pytest.approx((0.449,)) and spec.std == pytest.approx((0.226,))
    batch = preprocess_batch([_pixel_image(255, 0, 128)], spec)
    assert batch.shape == (1, 1, 2, 3)
    # OpenCV's gray: round(0.299 * 255 + 0.587 * 0 + 0.114 * 128) = 91
    np.testing.assert_allclose(batch[0, 0], (91 / 255 - 0.449) / 0.226, rtol=1e-5)
    nhwc = preprocess_batch([_pixel_image(255, 0, 128)], preset("imagenet", (2, 3),
                                                                layout="nhwc", channels=1))
    assert nhwc.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(nhwc[..., 0], batch[:, 0])
    bgr = preset("imagenet", (2, 3), bgr=True, channels=1)  # one channel has no order
    np.testing.assert_array_equal(preprocess_batch([_pixel_image(255, 0, 128)], bgr), batch)


def test_a_grayscale_file_keeps_its_values_in_one_channel() -> None:
    values = np.random.default_rng(0).integers(0, 256, (5, 7), np.uint8)
    image = np.repeat(values[..., None], 3, axis=2)  # how load_image reads a gray file
    batch = preprocess_batch([image], preset("raw", (5, 7), channels=1))
    np.testing.assert_array_equal(batch[0, 0], values)
    upscaled = preprocess_batch([image], preset("raw", (10, 14), channels=1))
    rgb = preprocess_batch([image], preset("raw", (10, 14)))
    np.testing.assert_allclose(upscaled[0, 0], rgb[0, 0], atol=1.0)  # gray, then resized


def test_one_mean_or_std_value_stands_for_every_channel() -> None:
    spec = Preprocess((2, 3), mean=(10.0,), std=(2.0,), scale=1.0)
    assert spec.mean == (10.0, 10.0, 10.0) and spec.std == (2.0, 2.0, 2.0)
    assert Preprocess((2, 3), channels=1).mean == (0.0,)
    np.testing.assert_allclose(preprocess_batch([_pixel_image(12, 40, 0)], spec)[0, :, 0, 0],
                               [1.0, 15.0, -5.0])
    with pytest.raises(ValueError, match=r"mean needs one value per channel \(1\)"):
        Preprocess((2, 3), mean=(0.5, 0.5, 0.5), channels=1)
    with pytest.raises(ValueError, match=r"1 \(grayscale\) or 3 \(RGB\), got 4"):
        Preprocess((2, 3), channels=4)


class _Facts:
    """What model_preprocess reads off a session."""

    def __init__(self, channels: int | None, layout: str = "nchw") -> None:
        self.metadata: dict[str, str] = {}
        self.layout = layout
        self._channels = channels

    @property
    def image_size(self) -> tuple[int, int] | None:
        return (8, 8)

    @property
    def channels(self) -> int | None:
        return self._channels


def test_model_preprocess_follows_the_models_channels() -> None:
    gray = model_preprocess(_Facts(1), preset_name="imagenet")
    assert gray.channels == 1 and gray.mean == pytest.approx((0.449,))
    assert model_preprocess(_Facts(1), mean=(0.5,), std=(0.25,), bgr=True).std == (0.25,)
    assert model_preprocess(_Facts(None)).channels == 3  # not fixed: RGB as before
    colour = model_preprocess(_Facts(3), mean=(0.5,), std=(0.2, 0.3, 0.4), bgr=True)
    assert colour.mean == (0.5, 0.5, 0.5) and colour.std == (0.4, 0.3, 0.2)
    with pytest.raises(FgOnnxError, match="give --mean one value, not 3"):
        model_preprocess(_Facts(1), mean=(0.485, 0.456, 0.406))
    with pytest.raises(FgOnnxError, match="give --std one value, not 3"):
        model_preprocess(_Facts(1, "nhwc"), std=(0.2, 0.2, 0.2))
    with pytest.raises(FgOnnxError, match=r"has 4 channels; images can be fed as 3 \(RGB\) or 1"):
        model_preprocess(_Facts(4))


def test_sample_model_classifies_the_sample_images() -> None:
    """The shipped model, its metadata and the loaders agree end to end."""
    model_path = SAMPLES / "shapes_cnn.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    labels = json.loads(metadata["fg_onnx.labels"])
    spec = preset(metadata["fg_onnx.preprocess"], (64, 64))
    paths = iter_image_paths([SAMPLES / "images"])
    assert {p.suffix for p in paths} == {".png", ".jpg"} and len(paths) >= len(labels)
    batch = preprocess_batch([load_image(p) for p in paths], spec)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": batch})[0]
    predicted = [labels[i] for i in logits.argmax(axis=1)]
    assert predicted == [p.stem.split("_")[0] for p in paths]  # files are named by class
