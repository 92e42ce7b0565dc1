"""Whole-graph tests of the reverse-mode walk: fan-out, pruning, integer paths, errors, opsets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from helpers import ADJOINT_TOL, FLOAT32_TOL, randn
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.errors import FgOnnxError, GraphBuildError, ModelLoadError, UnsupportedOpsError
from fg_onnx.grad import (
    GRAD_PREFIX,
    REGISTRY,
    SEED_INPUT,
    VJPContext,
    build_backward,
    gradient_model,
    vjp,
)
from fg_onnx.grad.check import check_vjp, make_runner, to_float64
from fg_onnx.grad.registry import Cotangents
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.info import GraphInfo, opset_of
from fg_onnx.graph.normalize import normalize

RNG = np.random.default_rng(20240607)
F = TensorProto.FLOAT


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape, away_from=0.0)


def make(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int]],
    outputs: Sequence[str],
    weights: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    value_info: Sequence[onnx.ValueInfoProto] = (),
    extra_opsets: Sequence[onnx.OperatorSetIdProto] = (),
) -> onnx.ModelProto:
    """A float32 model from nodes; output types are left to shape inference."""
    graph = helper.make_graph(
        list(nodes), "test",
        [helper.make_tensor_value_info(n, F, list(s)) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in (weights or {}).items()],
        value_info=list(value_info),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets]
    )
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def node(op: str, inputs: Sequence[str], outputs: Sequence[str] | str,
         **attrs: Any) -> onnx.NodeProto:
    outs = [outputs] if isinstance(outputs, str) else list(outputs)
    return helper.make_node(op, list(inputs), outs, name=f"{op.lower()}_{outs[0]}", **attrs)


def assert_gradient_ok(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                       wrt: Sequence[str] | None = None, output: str | None = None) -> None:
    result = check_vjp(model, feeds, wrt=wrt, output=output)
    assert result.adjoint_error < ADJOINT_TOL, (result.lhs, result.rhs)
    assert result.float32_error < FLOAT32_TOL, result.float32_error


def gradient_nodes(model: onnx.ModelProto, original: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes the gradient pass appended (it keeps the forward nodes first and in order)."""
    return list(model.graph.node[len(original.graph.node):])


def residual_model() -> onnx.ModelProto:
    # x feeds three consumers (conv, the residual Add and the Mul) and h feeds two, so both
    # cotangents must be accumulated.
    return make(
        [
            node("Conv", ["x", "W1", "B1"], "c1", pads=[1, 1, 1, 1]),
            node("Relu", ["c1"], "h"),
            node("Conv", ["h", "W2"], "c2", pads=[1, 1, 1, 1]),
            node("Add", ["c2", "x"], "res"),
            node("Mul", ["res", "h"], "m"),
            node("Mul", ["m", "x"], "mx"),
            node("Relu", ["mx"], "act"),
            node("Flatten", ["act"], "flat"),
            node("Gemm", ["flat", "Wfc", "Bfc"], "y", transB=1),
        ],
        {"x": (2, 3, 5, 5)},
        ["y"],
        {"W1": r(3, 3, 3, 3), "B1": r(3), "W2": r(3, 3, 3, 3), "Wfc": r(4, 75), "Bfc": r(4)},
    )


def test_residual_and_fan_out_match_finite_differences() -> None:
    assert_gradient_ok(residual_model(), {"x": r(2, 3, 5, 5)})


def test_fan_out_cotangents_are_summed() -> None:
    model = residual_model()
    grad = gradient_model(model)
    producers = {o: n for n in grad.graph.node for o in n.output}
    public = producers[GRAD_PREFIX + "x"]
    assert public.op_type == "Identity"
    leaves, pending = [], [public.input[0]]
    while pending:  # the tree of Adds that accumulates the cotangents
        node = producers[pending.pop()]
        if node.op_type == "Add" and all(name.startswith("fg/") for name in node.input):
            pending.extend(node.input)
        else:
            leaves.append(node)
    assert len(leaves) == 3  # conv, residual Add and the second Mul


def test_branches_and_concat() -> None:
    model = make(
        [
            node("Relu", ["x"], "a"),
            node("Mul", ["x", "scale"], "b"),
            node("Neg", ["x"], "c"),
            node("Concat", ["a", "b", "c", "k"], "cat", axis=1),
            node("Gemm", ["cat", "W"], "y"),
        ],
        {"x": (3, 4)},
        ["y"],
        {"scale": r(4), "k": r(3, 2), "W": r(14, 5)},
    )
    assert_gradient_ok(model, {"x": r(3, 4)})


def test_two_inputs_and_diamond() -> None:
    model = make(
        [
            node("Mul", ["x", "z"], "xz"),
            node("Relu", ["xz"], "p"),
            node("Sub", ["xz", "x"], "q"),
            node("Div", ["p", "d"], "pd"),
            node("Add", ["pd", "q"], "y"),
        ],
        {"x": (2, 3), "z": (3,)},
        ["y"],
        {"d": np.abs(r(2, 3)) + 1.0},
    )
    feeds = {"x": r(2, 3), "z": r(3)}
    assert_gradient_ok(model, feeds)
    assert_gradient_ok(model, feeds, wrt=["z"])


def _two_output_model(with_second_branch: bool) -> onnx.ModelProto:
    nodes = [
        node("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1]),
        node("Relu", ["c"], "y"),
    ]
    outputs = ["y"]
    if with_second_branch:
        # Det has no rule; pruning must drop the branch before the coverage check.
        nodes += [
            node("Neg", ["c"], "n"),
            node("Mul", ["n", "n"], "nx"),
            node("Det", ["nx"], "side"),
        ]
        outputs.append("side")
    return make(nodes, {"x": (1, 2, 4, 4)}, outputs, {"W": r(3, 2, 3, 3)})


def test_branch_to_another_output_is_pruned() -> None:
    full, lean = _two_output_model(True), _two_output_model(False)
    grad_full = gradient_model(full, output="y")
    grad_lean = gradient_model(lean, output="y")
    added = [n.op_type for n in gradient_nodes(grad_full, full)]
    assert added == [n.op_type for n in gradient_nodes(grad_lean, lean)]

    info = GraphInfo(normalize(full))
    builder = GraphBuilder(info)
    backward = build_backward(info, builder, {"y": builder.reserve("seed")}, ["x"])
    assert set(backward.differentiated) == {"Conv", "Relu"}
    assert {n.output[0] for n in backward.active_nodes} == {"c", "y"}
    assert_gradient_ok(full, {"x": r(1, 2, 4, 4)}, output="y")


def test_second_output_is_differentiated_when_asked() -> None:
    model = make(
        [
            node("Relu", ["x"], "y"),
            node("Neg", ["x"], "n"),
            node("Mul", ["n", "x"], "other"),
        ],
        {"x": (2, 3)},
        ["y", "other"],
    )
    info = GraphInfo(normalize(model))
    builder = GraphBuilder(info)
    backward = build_backward(info, builder, {"other": builder.reserve("seed")}, ["x"])
    assert set(backward.differentiated) == {"Neg", "Mul"}
    assert_gradient_ok(model, {"x": r(2, 3)}, output="other")


def test_integer_shape_path_is_not_differentiated() -> None:
    model = make(
        [
            node("Mul", ["x", "x"], "sq"),
            node("Reshape", ["sq", "flat_shape"], "flat"),
            node("Relu", ["flat"], "act"),
            node("Shape", ["x"], "x_shape"),
            node("Reshape", ["act", "x_shape"], "back"),
            node("Add", ["back", "x"], "y"),
        ],
        {"x": (2, 3, 4)},
        ["y"],
        {"flat_shape": np.array([2, 12], dtype=np.int64)},
    )
    info = GraphInfo(normalize(model))
    builder = GraphBuilder(info)
    backward = build_backward(info, builder, {"y": builder.reserve("seed")}, ["x"])
    assert "Shape" not in backward.differentiated
    assert all(n.op_type != "Shape" for n in backward.active_nodes)
    assert backward.differentiated["Reshape"] == 2
    assert_gradient_ok(model, {"x": r(2, 3, 4)})


def _intermediate_model() -> onnx.ModelProto:
    # y depends on x both through h and directly, so the gradient w.r.t. h is a partial one.
    return make(
        [
            node("Conv", ["x", "W"], "h", pads=[1, 1, 1, 1]),
            node("Relu", ["h"], "a"),
            node("Mul", ["a", "x"], "ax"),
            node("Mul", ["h", "h"], "hh"),
            node("Add", ["ax", "hh"], "y"),
        ],
        {"x": (1, 2, 4, 4)},
        ["y"],
        {"W": r(2, 2, 3, 3)},
    )


def _cut_at(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """The model with ``tensor`` turned into a graph input (its producer removed)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [n for n in copy.graph.node if tensor not in n.output]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    copy.graph.input.append(helper.make_tensor_value_info(tensor, F, None))
    return copy


def test_gradient_wrt_intermediate_matches_finite_differences() -> None:
    model = _intermediate_model()
    x = r(1, 2, 4, 4)
    info = GraphInfo(normalize(model))
    builder = GraphBuilder(info)
    seed = builder.reserve(SEED_INPUT)
    backward = build_backward(info, builder, {"y": seed}, ["h", "x"])
    grad_h, grad_x = backward.grads["h"], backward.grads["x"]
    assert grad_h is not None and grad_x is not None and grad_h != grad_x
    grad = onnx.ModelProto()
    grad.CopyFrom(info.model)
    grad.graph.input.append(helper.make_tensor_value_info(seed, F, [1, 2, 4, 4]))
    del grad.graph.output[:]
    grad.graph.output.extend(
        helper.make_empty_tensor_value_info(n) for n in ("h", grad_h, grad_x)
    )
    builder.apply_to(grad)

    v = RNG.standard_normal((1, 2, 4, 4))
    h, dh, dx = make_runner(to_float64(grad))({"x": x.astype(np.float64), SEED_INPUT: v})
    # Central differences of y in h alone, x held fixed.
    cut = make_runner(to_float64(_cut_at(model, "h")))
    u, eps = RNG.standard_normal(h.shape), 1e-6
    plus = cut({"x": x.astype(np.float64), "h": h + eps * u})[0]
    minus = cut({"x": x.astype(np.float64), "h": h - eps * u})[0]
    fd = float(np.vdot((plus - minus) / (2 * eps), v))
    assert abs(np.vdot(u, dh) - fd) < 1e-6 * max(1.0, abs(fd))
    # The total derivative w.r.t. x still includes the path through h.
    dx_direct = gradient_model(model, wrt=["x"])
    dx_ref = make_runner(to_float64(dx_direct))({"x": x.astype(np.float64), SEED_INPUT: v})[1]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)


def test_gradient_model_accepts_intermediate_wrt() -> None:
    model = _intermediate_model()
    grad = gradient_model(model, wrt=["h"])
    assert [o.name for o in grad.graph.output] == ["y", GRAD_PREFIX + "h"]
    x = r(1, 2, 4, 4)
    v = r(1, 2, 4, 4)
    h, dh = make_runner(_with_outputs(grad, ["h", GRAD_PREFIX + "h"]))(
        {"x": x, SEED_INPUT: v}
    )
    # y = relu(h) * x + h * h, so dy/dh = (h > 0) * x + 2 h elementwise.
    np.testing.assert_allclose(dh, v * ((h > 0) * x + 2 * h), rtol=1e-5, atol=1e-6)


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return copy


def test_seed_that_does_not_reach_input_is_a_clear_error() -> None:
    model = make(
        [node("Relu", ["z"], "y"), node("Neg", ["x"], "other")],
        {"x": (2, 3), "z": (2, 3)},
        ["y", "other"],
    )
    with pytest.raises(FgOnnxError, match=r"'x' does not influence output 'y'"):
        gradient_model(model, output="y", wrt=["x"])
    with pytest.raises(FgOnnxError, match=r"no graph output named 'nope'"):
        gradient_model(model, output="nope")
    grad = gradient_model(model, output="y", wrt=["z"])
    assert GRAD_PREFIX + "z" in [o.name for o in grad.graph.output]


def test_unsupported_ops_are_listed_together() -> None:
    custom = helper.make_opsetid("com.example", 1)
    model = make(
        [
            node("Relu", ["x"], "a"),
            helper.make_node("Fancy", ["a"], ["f1"], name="fancy_one", domain="com.example"),
            node("DFT", ["f1"], "spec", axis=1),
            helper.make_node("Fancy", ["spec"], ["f2"], name="fancy_two", domain="com.example"),
            node("Det", ["z"], "det"),
            node("Add", ["f2", "det"], "y"),
        ],
        {"x": (3, 4, 1), "z": (2, 2)},
        ["y"],
        value_info=[
            # Exporters record the types of custom-op outputs; without them no path exists.
            helper.make_tensor_value_info("f1", F, [3, 4, 1]),
            helper.make_tensor_value_info("f2", F, [3, 4, 2]),
        ],
        extra_opsets=[custom],
    )
    with pytest.raises(UnsupportedOpsError) as caught:
        gradient_model(model)
    message = str(caught.value)
    assert "\n" not in message
    assert "3 op type(s)" in message
    assert "com.example::Fancy (opset 1) at node fancy_one, fancy_two" in message
    assert "DFT (opset 17) at node dft_spec" in message
    assert "Det (opset 17) at node det_det" in message
    assert "Relu" not in message and "Add" not in message
    kinds = {(d, t) for d, t, _, _ in caught.value.missing}
    assert kinds == {("com.example", "Fancy"), ("", "DFT"), ("", "Det")}


def test_custom_op_without_recorded_type_is_reported_as_unsupported() -> None:
    model = make(
        [
            node("Relu", ["x"], "a"),
            helper.make_node("Fancy", ["a"], ["f"], name="fancy", domain="com.example"),
            node("Relu", ["f"], "y"),
        ],
        {"x": (3, 4)},
        ["y"],
        extra_opsets=[helper.make_opsetid("com.example", 2)],
    )
    with pytest.raises(UnsupportedOpsError, match=r"com.example::Fancy \(opset 2\) at node fancy"):
        gradient_model(model)


def _opset10_model() -> onnx.ModelProto:
    return make(
        [
            node("Unsqueeze", ["x"], "x4", axes=[1]),
            node("Conv", ["x4", "W"], "c", pads=[1, 1]),
            node("Clip", ["c"], "clipped", min=-0.5, max=0.8),
            node("ReduceSum", ["clipped"], "s", axes=[1], keepdims=1),
            node("Squeeze", ["s"], "sq", axes=[1]),
            node("Mul", ["sq", "x"], "m"),
            node("Softmax", ["m"], "y", axis=1),
        ],
        {"x": (2, 6)},
        ["y"],
        {"W": r(3, 1, 3)},
        opset=10,
    )


def test_old_opset_is_upgraded_and_differentiated() -> None:
    model = _opset10_model()
    assert opset_of(normalize(model)) >= 17
    grad = gradient_model(model)
    assert opset_of(grad) >= 17
    onnx.checker.check_model(grad, full_check=True)
    assert_gradient_ok(model, {"x": r(2, 6)})


def test_model_with_external_data(tmp_path: Path) -> None:
    model = residual_model()
    path = tmp_path / "model.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(model)  # saving with external data rewrites the proto's tensors in place
    onnx.save_model(saved, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.data", size_threshold=0)
    assert (tmp_path / "model.data").stat().st_size > 0
    from_file = gradient_model(path)
    from_proto = gradient_model(model)
    x, v = r(2, 3, 5, 5), r(2, 4)
    feeds = {"x": x, SEED_INPUT: v}
    for got, want in zip(make_runner(from_file)(feeds), make_runner(from_proto)(feeds),
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_missing_external_data_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(residual_model(), str(path), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        gradient_model(path)


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", "not found"),
        ("directory", "not a file"),
        ("empty", "empty"),
        ("garbage", "not .*ONNX model"),
    ],
)
def test_load_errors(tmp_path: Path, kind: str, pattern: str) -> None:
    path = tmp_path / "model.onnx"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match=pattern) as caught:
        gradient_model(path)
    assert "\n" not in str(caught.value)


def _pair_model() -> onnx.ModelProto:
    """x, w -> y through a custom two-input op (named "pair") whose rule a test registers."""
    return make(
        [helper.make_node("Pair", ["x", "w"], ["y"], name="pair", domain="fg.test")],
        {"x": (3, 4), "w": (3, 4)},
        ["y"],
        extra_opsets=[helper.make_opsetid("fg.test", 1)],
    )


def _backward_with_pair_rule(monkeypatch: pytest.MonkeyPatch,
                             result: Callable[[str], list[str | None]]) -> None:
    """Differentiates the pair model with a rule returning ``result(g)``, registered on a
    copy of the table that the test's end throws away."""
    monkeypatch.setattr(REGISTRY, "_entries", dict(REGISTRY._entries))

    @vjp("Pair", domain="fg.test")
    def pair_vjp(ctx: VJPContext, gy: Cotangents) -> list[str | None]:
        return result(ctx.cotangent(gy))

    info = GraphInfo(normalize(_pair_model()))
    build_backward(info, GraphBuilder(info), {"y": "seed"}, ["x", "w"])


@pytest.mark.parametrize(
    ("result", "pattern"),
    [
        (lambda g: [g], r"Pair node 'pair'.*returned 1 cotangent\(s\) for 2 input\(s\)"),
        (lambda g: [g, None, g], r"Pair node 'pair'.*a cotangent for input 2"),
    ],
    ids=["too-few", "input-the-node-lacks"],
)
def test_rule_with_the_wrong_number_of_cotangents_is_named(
    monkeypatch: pytest.MonkeyPatch, result: Callable[[str], list[str | None]], pattern: str,
) -> None:
    with pytest.raises(GraphBuildError, match=pattern):
        _backward_with_pair_rule(monkeypatch, result)


def test_rule_may_list_omitted_optional_inputs_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    _backward_with_pair_rule(monkeypatch, lambda g: [g, g, None])
