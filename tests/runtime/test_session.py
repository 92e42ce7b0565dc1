"""The FullGrad session: in-memory augmentation, batching, targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import with_symbolic_dims

import fg_onnx
from fg_onnx.errors import FgOnnxError
from fg_onnx.runtime.session import FullGrad

SAMPLE = Path(__file__).parents[2] / "sample_models" / "shapes_cnn.onnx"


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((7, 3, 64, 64)).astype(np.float32)


def test_batch_size_not_dividing_the_count_gives_the_same_maps(batch: np.ndarray) -> None:
    whole = FullGrad(SAMPLE, device="cpu", batch_size=16).explain(batch)
    chunked = FullGrad(SAMPLE, device="cpu", batch_size=3).explain(batch)
    assert len(whole) == len(chunked) == 7
    np.testing.assert_allclose(chunked.saliency, whole.saliency, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.targets, whole.targets)
    np.testing.assert_array_equal(whole.targets, whole.predicted)
    assert whole.saliency.shape == (7, 64, 64)
    assert whole.completeness_error.max() < 1e-4


@pytest.mark.parametrize("fixed", [1, 3])
def test_a_fixed_batch_model_explains_any_number_of_images(fixed: int,
                                                            batch: np.ndarray) -> None:
    """Model-zoo exports fix the batch ([1, 3, H, W]); 7 images still run, whatever the
    requested batch size, and give the dynamic model's results."""
    model = with_symbolic_dims(onnx.load(str(SAMPLE)), {"image": [fixed, 3, 64, 64]})
    session = FullGrad(model, device="cpu", batch_size=16)
    assert session.batches.size == fixed and session.batches.fixed
    result = session.explain(batch, [0, 1, 2, 3, 0, 1, 2])
    reference = FullGrad(SAMPLE, device="cpu", batch_size=16).explain(batch, [0, 1, 2, 3, 0, 1, 2])
    assert len(result) == 7
    np.testing.assert_allclose(result.saliency, reference.saliency, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.predicted, reference.predicted)
    names = ["fg_score", "fg_input_grad"]
    raw = session.outputs(batch, reference.targets, names)
    assert raw["fg_input_grad"].shape == batch.shape
    np.testing.assert_allclose(raw["fg_score"], reference.scores, rtol=1e-5, atol=1e-6)


def test_targets_and_augmented_input(tmp_path: Path, batch: np.ndarray) -> None:
    augmented = tmp_path / "aug.onnx"
    augmented.write_bytes(fg_onnx.augment(SAMPLE).SerializeToString())
    session = FullGrad(augmented, device="cpu")
    assert session.image_size == (64, 64) and session.channels == 3 and session.classes == 4
    result = session.explain(batch[:3], [2, 0, 3])
    assert result.targets.tolist() == [2, 0, 3]
    single = session.explain(batch[:2], 1)
    assert single.targets.tolist() == [1, 1]
    with pytest.raises(FgOnnxError, match="out of range"):
        session.explain(batch[:1], 4)
    with pytest.raises(FgOnnxError, match="2 targets for 3 images"):
        session.explain(batch[:3], [0, 1])
    with pytest.raises(FgOnnxError, match=r"target -7 is not a class: use 0, 1, \.\.\. or -1"):
        session.explain(batch[:2], [-1, -7])
    with pytest.raises(FgOnnxError, match="below 2\\*\\*63"):
        session.explain(batch[:1], 10**20)
    assert not [p for p in tmp_path.iterdir() if p.name != "aug.onnx"]  # nothing written


def test_io_binding_path_gives_the_same_results(batch: np.ndarray) -> None:
    plain = FullGrad(SAMPLE, device="cpu", io_binding=False).explain(batch[:3], [0, 1, 2])
    bound = FullGrad(SAMPLE, device="cpu", io_binding=True).explain(batch[:3], [0, 1, 2])
    np.testing.assert_array_equal(bound.saliency, plain.saliency)
    np.testing.assert_array_equal(bound.scores, plain.scores)


def test_bad_batch_size() -> None:
    with pytest.raises(FgOnnxError, match="batch size"):
        FullGrad(SAMPLE, batch_size=0)


def test_models_augmented_for_a_cpu_session_may_use_cpu_only_ops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fg_onnx.fullgrad.augment import AugmentOptions
    from fg_onnx.runtime import session

    assert session._for_device(None, "cpu").provider == "cpu"
    kept = AugmentOptions(method="gradient")
    assert session._for_device(kept, "cpu") == AugmentOptions(method="gradient", provider="cpu")
    monkeypatch.setattr(session, "planned_providers",
                        lambda device: (["CUDAExecutionProvider", "CPUExecutionProvider"], None))
    assert session._for_device(kept, "auto").provider == "any"  # may end up on CUDA


def test_cpu_session_explains_the_same_with_cpu_only_ops(batch: np.ndarray) -> None:
    portable = fg_onnx.augment(SAMPLE)
    cpu = FullGrad(SAMPLE, device="cpu").explain(batch)
    reference = FullGrad(portable, device="cpu").explain(batch)
    np.testing.assert_allclose(cpu.saliency, reference.saliency, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("shape", "message"), [
    ((1, 3, 32, 32), "takes 64x64 images \\(NCHW\\); the batch has 32x32"),
    ((1, 64, 64, 3), "takes 64x64 images \\(NCHW\\); the batch has 64x3"),
    ((1, 1, 64, 64), "takes 3-channel images"),
])
def test_a_batch_of_another_shape_is_refused_in_one_line(shape: tuple[int, ...],
                                                        message: str) -> None:
    fullgrad = FullGrad(SAMPLE, device="cpu")
    with pytest.raises(FgOnnxError, match=message) as caught:
        fullgrad.explain(np.zeros(shape, np.float32))
    assert "\n" not in str(caught.value)
