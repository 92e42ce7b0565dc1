"""The augmented model's contract: its facts, their validation, the completeness error."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import onnx
import pytest

import fg_onnx
from fg_onnx.choices import GRAPH_METHODS, GraphMethod
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad import contract
from fg_onnx.fullgrad.maps import GRAPH_MAPS
from fg_onnx.methods import METHODS

SAMPLE = Path(__file__).resolve().parents[2] / "sample_models" / "shapes_cnn.onnx"


def test_facts_round_trip_and_is_augmented() -> None:
    original = onnx.load(str(SAMPLE))
    assert not contract.is_augmented(original)
    with pytest.raises(FgOnnxError, match="not augmented"):
        contract.read_facts(original)
    augmented = fg_onnx.augment(original, implicit_biases=True)
    assert contract.is_augmented(augmented)
    facts = contract.read_facts(augmented)
    assert (facts.input, facts.layout, facts.method) == ("image", "nchw", "fullgrad")
    assert facts.implicit_biases and facts.taps
    contract.write_facts(augmented, facts)  # replaces, never duplicates
    assert [p.key for p in augmented.metadata_props].count(contract.METADATA_KEY) == 1


@pytest.mark.parametrize("damage", ['{"input": "x"', '{"input": "x"}',
                                    '{"input": "x", "output": "y", "scores": "y", '
                                    '"skipped_op": null, "layout": "nwhc"}'])
def test_damaged_facts_are_refused_in_one_line(damage: str) -> None:
    model = fg_onnx.augment(SAMPLE)
    for entry in model.metadata_props:
        if entry.key == contract.METADATA_KEY:
            entry.value = damage
    with pytest.raises(FgOnnxError, match="metadata is damaged") as caught:
        contract.read_facts(model)
    assert "\n" not in str(caught.value)


def test_completeness_error_definition() -> None:
    x = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)
    grad = np.array([[2.0, 1.0], [4.0, 1.0]], np.float32)
    bias = np.array([1.0, 0.0], np.float32)
    score = np.array([5.0, 2.0], np.float32)  # exact, then 1 off: |1 - 2| / 2
    np.testing.assert_allclose(contract.completeness_error(grad, x, bias, score), [0.0, 0.5])
    # a score of zero: relative to the floor, not a division by zero
    error = contract.completeness_error(grad[:1], x[:1], bias[:1], np.zeros(1))
    assert error[0] == pytest.approx(5.0 / contract.COMPLETENESS_FLOOR)
    scaled = contract.completeness_error(grad, x, bias, score, scale=np.array([10.0, 10.0]))
    np.testing.assert_allclose(scaled, [0.0, 0.1])


def test_the_map_table_is_the_graph_method_type_and_the_method_table() -> None:
    assert tuple(GRAPH_MAPS) == get_args(GraphMethod) == GRAPH_METHODS
    for name, graph_map in GRAPH_MAPS.items():
        assert METHODS[name].graph == name
        assert (METHODS[name].completeness == "fullgrad") == graph_map.completeness
    assert {m.graph for m in METHODS.values()} == set(GRAPH_MAPS)
    # Only FullGrad's decomposition and integrated gradients' own check are completeness.
    assert {n for n, m in METHODS.items() if m.completeness} == {"fullgrad",
                                                                  "integrated-gradients"}
