"""Adebayo et al.'s sanity checks (fg_onnx/evaluation/sanity.py, sanity_report.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import UnsupportedModelError
from fg_onnx.evaluation import sanity_report
from fg_onnx.evaluation.sanity import (
    SanityConfig,
    find_layers,
    randomised,
    sanity_checks,
    spearman,
    ssim,
)
from fg_onnx.graph.normalize import normalize

SAMPLE = Path(__file__).parents[2] / "sample_models" / "shapes_cnn.onnx"


def _matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 4)).astype(np.float32),
               "b": np.zeros(4, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("MatMul", ["hb", "x"], ["scores"])]  # two activations
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [4, 4])], [helper.make_tensor_value_info(
            "scores", TensorProto.FLOAT, [4, 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_layers_are_nodes_with_constant_weights() -> None:
    layers = find_layers(_matmul_model())
    assert [(layer.op_type, layer.weights) for layer in layers] == [("MatMul", ("w",))]
    sample = find_layers(normalize(onnx.load(str(SAMPLE))))
    assert [layer.op_type for layer in sample] == ["Conv"] * 5 + ["Gemm"]
    assert all(len(layer.weights) == 2 for layer in sample)  # weights and (folded) bias


def test_randomised_weights_keep_shape_mean_and_spread_of_only_their_layers() -> None:
    model = normalize(onnx.load(str(SAMPLE)))
    layers = find_layers(model)
    changed = randomised(model, layers[-2:], seed=3)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in changed.graph.initializer}
    drawn = {name for layer in layers[-2:] for name in layer.weights}
    for name, value in before.items():
        if name not in drawn:
            np.testing.assert_array_equal(after[name], value)
            continue
        assert after[name].shape == value.shape and not np.array_equal(after[name], value)
        if value.size > 100:
            assert after[name].mean() == pytest.approx(value.mean(), abs=0.2 * value.std())
            assert after[name].std() == pytest.approx(value.std(), rel=0.2)
    again = randomised(model, layers[-2:], seed=3)
    assert again.SerializeToString() == changed.SerializeToString()  # seeded


def test_similarity_measures() -> None:
    a = np.random.default_rng(0).random((16, 16))
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.zeros_like(a)) == 0.0
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 3 * a + 1) == pytest.approx(1.0)  # scale does not matter
    assert ssim(a, np.random.default_rng(1).random((16, 16))) < 0.3


def test_sanity_checks_on_the_sample(tmp_path: Path) -> None:
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    lines: list[str] = []
    result = sanity_checks(SAMPLE, batch, SanityConfig(("fullgrad", "grad-cam"), device="cpu"),
                           progress=lines.append)
    assert len(result.cascading) == len(result.independent) == len(result.layers) == 6
    assert result.cascading[-1].randomised == [layer.name for layer in result.layers]
    assert any("cascading" in line for line in lines) and lines[-1] == "random-logit test"
    for step in [*result.cascading, *result.independent]:
        for found in step.similarity.values():
            assert -1 <= found.spearman_abs <= 1 and found.spearman is None
    # fully randomised, FullGrad's map is far from the original (the paper's test passes)
    assert result.cascading[-1].similarity["fullgrad"].spearman_abs < 0.6
    document = json.loads(sanity_report.to_json(result))
    step = document["methods"]["fullgrad"]["cascading"][0]
    assert set(step) == {"randomised", "spearman_abs", "spearman", "ssim"}
    assert document["methods"]["grad-cam"]["random_logit"]["ssim"] <= 1
    assert "### Cascading randomisation" in sanity_report.markdown(result)
    assert len(result.maps["fullgrad"]) == 7
    grid = sanity_report.grid(result)
    assert grid.shape[0] > 2 * sanity_report.CELL and grid.dtype == np.uint8
    assert sanity_report.plot(result).shape[2] == 3


def test_a_model_without_weights_is_refused_in_one_line() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "m",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match="no layer with constant weights"):
        sanity_checks(model, np.zeros((1, 3, 8, 8), np.float32),
                      SanityConfig(("gradient",), device="cpu"))
