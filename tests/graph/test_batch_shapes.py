"""Shape inference with a symbolic batch: dims that do not depend on the batch are found at
concrete batch sizes (fg_onnx/graph/normalize.py), so a detector head whose Reshape to
[batch, C, -1] hides its anchor count differentiates without --input-size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import completeness, run_on_onnxruntime
from torch_models import randomize_batchnorm
from torch_task_models import TinyYolo

import fg_onnx
from fg_onnx.fullgrad.contract import GRAD_OUTPUT, INPUT_GRAD, SCORE
from fg_onnx.graph.info import GraphInfo
from fg_onnx.graph.normalize import normalize

SIZE = 64
ANCHORS = (SIZE // 4) ** 2 + (SIZE // 8) ** 2


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyYolo]:
    torch.manual_seed(0)
    model = TinyYolo().eval()
    randomize_batchnorm(model)
    path = tmp_path_factory.mktemp("yolo") / "yolo.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["images"], output_names=["out"],
                      dynamic_axes={"images": {0: "batch"}, "out": {0: "batch"}})
    return path, model


def test_dims_hidden_by_a_symbolic_batch_are_inferred(detector: tuple[Path, TinyYolo]) -> None:
    info = GraphInfo(normalize(onnx.load(str(detector[0]))))
    dfl = next(n for n in info.graph.node if n.op_type == "Conv" and "dfl" in n.name)
    assert info.shape(dfl.input[0]) == ("batch", 16, 4, ANCHORS)
    assert info.shape("out") == ("batch", 7, ANCHORS)  # the batch stays symbolic


@pytest.mark.parametrize("batch", [1, 3])
def test_detector_with_symbolic_batch_gradient_and_completeness(
        detector: tuple[Path, TinyYolo], batch: int) -> None:
    path, model = detector
    augmented = fg_onnx.augment(path, seed_input=True, implicit_biases=True)
    x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    seed = np.zeros((batch, 7, ANCHORS), np.float32)
    seed[:, 4] = 1.0  # the sum of class 0's probabilities over all anchors
    seed[:, 0, :5] = 0.5  # and some box centres
    out = run_on_onnxruntime(augmented, {"images": x, GRAD_OUTPUT: seed})
    want = torch.from_numpy(x).requires_grad_(True)
    expected = model(want)
    (expected * torch.from_numpy(seed)).sum().backward()
    np.testing.assert_allclose(out["out"], expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    grad = want.grad.numpy()
    assert np.abs(out[INPUT_GRAD] - grad).max() <= 1e-4 * np.abs(grad).max()
    score = (expected.detach().numpy() * seed).reshape(batch, -1).sum(1)
    np.testing.assert_allclose(out[SCORE], score, rtol=1e-4)
    assert completeness(out, x).max() < 1e-4
