"""Shape inference with data propagation that does not materialise long vectors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from fg_onnx.graph.normalize import infer_shapes
from fg_onnx.graph.propagation import LONG_VECTOR, infer_with_data_propagation


def _flattened_then_cast(batch: int | str, side: int) -> onnx.ModelProto:
    """x → Reshape(-1) → Cast, beside a shape computation (Shape → Gather → Concat → Reshape)
    that only data propagation can follow."""
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["flattened"]),
        helper.make_node("Cast", ["flattened"], ["half"], to=TensorProto.FLOAT16),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["rows"], axis=0),
        helper.make_node("Reshape", ["x", "rows"], ["per_sample"]),
        helper.make_node("Cast", ["per_sample"], ["per_sample_half"], to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, side, side])],
        [helper.make_tensor_value_info("half", TensorProto.FLOAT16, None),
         helper.make_tensor_value_info("per_sample_half", TensorProto.FLOAT16, None)],
        [helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
         helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
         helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    values = [*model.graph.value_info, *model.graph.output]
    return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                     for d in v.type.tensor_type.shape.dim] for v in values}


def test_shapes_are_those_of_unguarded_inference() -> None:
    model = _flattened_then_cast(3, 64)  # 49152 elements: long, yet cheap unguarded
    assert LONG_VECTOR < 3 * 4 * 64 * 64
    unguarded = onnx.shape_inference.infer_shapes(model, data_prop=True)
    guarded = infer_with_data_propagation(model)
    assert _shapes(guarded) == _shapes(unguarded)
    assert _shapes(guarded)["per_sample_half"] == [3, 4 * 64 * 64]
    assert _shapes(guarded)["half"] == [3 * 4 * 64 * 64]
    assert [i.name for i in guarded.graph.input] == ["x"]


def test_a_symbolic_batch_still_gets_the_trial_batches_dims() -> None:
    # At the trial batches the flattened activation has a known length and is guarded; the
    # per-sample Reshape's -1 is still resolved.
    inferred = infer_shapes(_flattened_then_cast("N", 64))
    assert _shapes(inferred)["per_sample"] == ["N", 4 * 64 * 64]


def test_a_long_vector_does_not_exhaust_memory(tmp_path: Path) -> None:
    # 4 × 2^13 × 2^13 = 2^28 elements: ONNX's propagation would hold ~40 GB of dims. The
    # child process may use 3 GB of address space at most.
    path = tmp_path / "long.onnx"
    onnx.save(_flattened_then_cast(1, 8192), str(path))
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        import onnx
        from fg_onnx.graph.normalize import infer_shapes
        model = infer_shapes(onnx.load({str(path)!r}))
        print([d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str([4 * 8192 * 8192])


def test_the_rewrite_infers_through_the_guard() -> None:
    model = infer_shapes(_flattened_then_cast(2, 64))
    assert _shapes(model)["flattened"] == [2 * 4 * 64 * 64]
    assert not any(n.op_type == "Tile" for n in model.graph.node)


def test_a_vector_only_propagation_finds_short_keeps_its_consumers_shapes() -> None:
    # flat = Reshape(x, c·h·w) has no length without propagation, 192 with it: a shape's
    # business, so the Reshape after it still resolves its -1.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        *(helper.make_node("Gather", ["shape", f"i{k}"], [f"d{k}"], axis=0) for k in range(3)),
        helper.make_node("Mul", ["d0", "d1"], ["d01"]),
        helper.make_node("Mul", ["d01", "d2"], ["length"]),
        helper.make_node("Reshape", ["x", "length"], ["flat"]),
        helper.make_node("Reshape", ["flat", "two_rows"], ["rows"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8, 8])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
        [*(helper.make_tensor(f"i{k}", TensorProto.INT64, [1], [k]) for k in range(3)),
         helper.make_tensor("two_rows", TensorProto.INT64, [2], [2, -1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    unguarded = onnx.shape_inference.infer_shapes(model, data_prop=True)
    assert _shapes(infer_with_data_propagation(model)) == _shapes(unguarded)
    assert _shapes(unguarded)["rows"] == [2, 96]
