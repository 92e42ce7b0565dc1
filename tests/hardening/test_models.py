"""Bad, unusual and unsupported models: one clean line each, the input left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.runtime.session import FullGrad
from hardening.support import (
    IMAGES,
    SAMPLE,
    assert_clean_failure,
    run_cli,
    save,
    tiny_cnn,
)

CPU = ["CPUExecutionProvider"]


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected words of the message)."""
    data = SAMPLE.read_bytes()
    files = {
        "random": (os.urandom(2048), "not a valid ONNX model"),
        "png": ((IMAGES / "circle.png").read_bytes(), "not a valid ONNX model"),
        "empty": (b"", "model file is empty"),
        "truncated": (data[: len(data) // 2], "not a valid ONNX model"),
        "header_only": (data[:64], "not a valid ONNX model"),
    }
    paths = {}
    for name, (content, words) in files.items():
        path = folder / f"{name}.onnx"
        path.write_bytes(content)
        paths[name] = (path, words)
    (folder / "dir.onnx").mkdir()
    paths["directory"] = (folder / "dir.onnx", "not a file")
    paths["missing"] = (folder / "missing.onnx", "model file not found")
    return paths


@pytest.mark.parametrize(
    "name", ["random", "png", "empty", "truncated", "header_only", "directory", "missing"])
@pytest.mark.parametrize("command", ["augment", "explain"])
def test_unreadable_models(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                           command: str) -> None:
    path, words = _bad_files(tmp_path)[name]
    before = path.read_bytes() if path.is_file() else None
    out = tmp_path / "out"
    argv = ([command, path, "-o", out / "m.onnx"] if command == "augment"
            else [command, path, IMAGES / "circle.png", "-o", out])
    if command == "augment":
        out.mkdir()
    assert_clean_failure(argv, capsys, words, str(path.name))
    if before is not None:
        assert path.read_bytes() == before
    assert not out.exists() or not list(out.iterdir())


def test_model_failing_the_checker_is_named_as_such(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_cnn()
    model.graph.node[1].input[0] = "nowhere"  # an undefined tensor
    path = save(model, tmp_path / "bad.onnx")
    assert_clean_failure(["augment", path, "-o", tmp_path / "o.onnx"], capsys,
                         "not a valid ONNX model: onnx.checker says", "nowhere")
    assert not (tmp_path / "o.onnx").exists()


def test_missing_external_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(onnx.load(str(SAMPLE)), str(path), save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    assert_clean_failure(["augment", path, "-o", tmp_path / "o.onnx"], capsys,
                         "external data of ext.onnx", "weights.bin")


def test_model_with_external_weights_is_augmented(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(onnx.load(str(SAMPLE)), str(path), save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    code, _, err = run_cli(["augment", path, "-o", tmp_path / "o.onnx"], capsys)
    assert code == 0, err
    onnx.checker.check_model(str(tmp_path / "o.onnx"), full_check=True)


def _unsupported_ops_model() -> onnx.ModelProto:
    model = tiny_cnn()
    graph = model.graph
    graph.node[1].input[0] = "rp"  # Relu(Foo(ReduceProd(LpPool(Conv)))): no rule for three
    graph.node.insert(1, helper.make_node("LpPool", ["c"], ["lp"], kernel_shape=[1, 1],
                                          name="lp"))
    graph.node.insert(2, helper.make_node("ReduceProd", ["lp"], ["rp"], axes=[2],
                                          name="prod"))
    graph.node.insert(3, helper.make_node("Foo", ["rp"], ["foo"], domain="com.example",
                                          name="foo"))
    graph.node[4].input[0] = "foo"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def test_ops_without_gradient_rule_are_listed_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(_unsupported_ops_model(), tmp_path / "m.onnx")
    assert_clean_failure(["augment", path, "-o", tmp_path / "o.onnx"], capsys,
                         "3 op type(s)", "ReduceProd (opset 17) at node prod",
                         "LpPool (opset 17) at node lp",
                         "com.example::Foo (opset 1) at node foo")


def test_custom_domain_without_opset_import(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    model = _unsupported_ops_model()
    del model.opset_import[1:]
    path = save(model, tmp_path / "m.onnx")
    assert_clean_failure(["augment", path, "-o", tmp_path / "o.onnx"], capsys,
                         "com.example")


def _two_input_model() -> onnx.ModelProto:
    model = tiny_cnn()
    model.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT,
                                                           ["N", 3, 8, 8]))
    model.graph.node[0].input[0] = "sum"
    model.graph.node.insert(0, helper.make_node("Add", ["x", "x2"], ["sum"], name="add"))
    return model


def _integer_input_model() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.ones((10, 3), np.float32), "E")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["e"]),
         helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)],
        "ids", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize(("make", "extra", "words"), [
    (_integer_input_model, [], ["no floating-point input"]),
    (_two_input_model, [], ["several float inputs (x, x2)", "--input"]),
    (tiny_cnn, ["--output", "logits"], ["no tensor named 'logits' in the graph", "outputs: y"]),
    (tiny_cnn, ["--input", "image"], ["no graph input named 'image'", "inputs: x"]),
    (tiny_cnn, ["--input-size", "16x8"], ["input 'x' is fixed at 8x8; --input-size 16x8 differs"]),
    (lambda: tiny_cnn(size=(8, "W")), ["--input-size", "4x4"], ["is fixed at 8x?"]),
    (lambda: tiny_cnn(TensorProto.BFLOAT16), [], ["bfloat16", "float16 or float32"]),
])
def test_models_that_need_a_choice_or_cannot_be_explained(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, extra: list[str],
        words: list[str]) -> None:
    path = save(make(), tmp_path / "m.onnx")  # type: ignore[operator]
    assert_clean_failure(["augment", path, "-o", tmp_path / "o.onnx", *extra], capsys, *words)


def test_choices_make_those_models_work(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    two = save(_two_input_model(), tmp_path / "two.onnx")
    assert run_cli(["augment", two, "-o", tmp_path / "a.onnx", "--input", "x2"], capsys)[0] == 0
    dynamic = save(tiny_cnn(size=("H", "W")), tmp_path / "dyn.onnx")
    assert run_cli(["augment", dynamic, "-o", tmp_path / "b.onnx", "--input-size", "8x8"],
                   capsys)[0] == 0
    shapes = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(tmp_path / "b.onnx")).graph.input}
    assert shapes["x"] == ["N", 3, 8, 8]
    fixed = save(tiny_cnn(size=(8, "W")), tmp_path / "fixed.onnx")
    assert run_cli(["augment", fixed, "-o", tmp_path / "c.onnx", "--input-size", "8x6"],
                   capsys)[0] == 0
    assert [d.dim_value for d in onnx.load(str(tmp_path / "c.onnx")).graph.input[0]
            .type.tensor_type.shape.dim][1:] == [3, 8, 6]


def test_input_size_never_changes_a_fixed_size(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(["explain", SAMPLE, IMAGES / "circle.png", "-o", tmp_path / "out",
                          "--input-size", "32x32"], capsys, "is fixed at 64x64")
    assert not (tmp_path / "out").exists()
    assert run_cli(["explain", SAMPLE, IMAGES / "circle.png", "-o", tmp_path / "out",
                    "--input-size", "64", "--device", "cpu"], capsys)[0] == 0


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=CPU)
    names = [o.name for o in session.get_outputs()]
    feeds = {"x": x, "fg_target": np.full(len(x), -1, np.int64)}
    return dict(zip(names, session.run(names, feeds), strict=True))


def test_float16_model_gives_float16_maps_close_to_float32(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    half = save(tiny_cnn(TensorProto.FLOAT16), tmp_path / "half.onnx")
    full = save(tiny_cnn(TensorProto.FLOAT), tmp_path / "full.onnx")
    for path in (half, full):
        assert run_cli(["augment", path, "-o", path.with_suffix(".fg.onnx")], capsys)[0] == 0
    onnx.checker.check_model(str(half.with_suffix(".fg.onnx")), full_check=True)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    got = _run(half.with_suffix(".fg.onnx"), x.astype(np.float16))
    want = _run(full.with_suffix(".fg.onnx"), x)
    assert got["fg_saliency"].dtype == np.float16 and got["fg_score"].dtype == np.float16
    reconstructed = (got["fg_input_grad"].astype(np.float64) * x).reshape(3, -1).sum(1)
    reconstructed += got["fg_bias_total"]
    score = got["fg_score"].astype(np.float64)
    assert np.all(np.abs(reconstructed - score) <= 1e-2 * np.maximum(np.abs(score), 1.0))
    scale = float(np.abs(want["fg_saliency"]).max())
    assert np.abs(got["fg_saliency"] - want["fg_saliency"]).max() < 1e-2 * scale
    np.testing.assert_array_equal(got["fg_target_used"], want["fg_target_used"])


def _quantized(kind: str) -> onnx.ModelProto:
    """Weight-only QDQ ("weights"), full QDQ ("qdq") or QLinearConv ("qlinear")."""
    model = tiny_cnn()
    graph = model.graph
    weight = numpy_helper.to_array(next(t for t in graph.initializer if t.name == "W"))
    graph.initializer.extend([
        numpy_helper.from_array(np.round(weight / 0.05).astype(np.int8), "Wq"),
        numpy_helper.from_array(np.array(0.05, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
    ])
    dq_weight = helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["Wd"], name="dq_w")
    quantize = helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x")
    if kind == "weights":
        graph.node[0].input[1] = "Wd"
        graph.node.insert(0, dq_weight)
    elif kind == "qdq":
        graph.node[0].input[:2] = ["xd", "Wd"]
        graph.node.insert(0, dq_weight)
        graph.node.insert(0, helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"],
                                              name="dq_x"))
        graph.node.insert(0, quantize)
    else:
        conv = helper.make_node("QLinearConv", ["xq", "xs", "xz", "Wq", "ws", "wz", "xs", "xz"],
                                ["cq"], pads=[1, 1, 1, 1], name="qconv")
        back = helper.make_node("DequantizeLinear", ["cq", "xs", "xz"], ["c"], name="dq_c")
        graph.node[0].CopyFrom(back)
        graph.node.insert(0, conv)
        graph.node.insert(0, quantize)
    return model


@pytest.mark.parametrize(("kind", "op"), [("qdq", "QuantizeLinear at node q_x"),
                                          ("qlinear", "QLinearConv at node qconv")])
def test_quantized_models_are_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              kind: str, op: str) -> None:
    path = save(_quantized(kind), tmp_path / "q.onnx")
    ort.InferenceSession(str(path), providers=CPU)  # a valid model onnxruntime runs
    assert_clean_failure(["augment", path, "-o", tmp_path / "o.onnx"], capsys,
                         "quantized models are not supported", op)


def test_dequantized_constant_weights_are_plain_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(_quantized("weights"), tmp_path / "q.onnx")
    code, _, err = run_cli(["augment", path, "-o", tmp_path / "o.onnx"], capsys)
    assert code == 0, err
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = _run(tmp_path / "o.onnx", x)
    reconstructed = (out["fg_input_grad"] * x).reshape(2, -1).sum(1) + out["fg_bias_total"]
    np.testing.assert_allclose(reconstructed, out["fg_score"], rtol=1e-4, atol=1e-5)


def test_batch_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feeds = {"x": np.zeros((0, 3, 8, 8), np.float32), "fg_target": np.zeros(0, np.int64)}
    for batch in (0, "N"):
        path = save(tiny_cnn(batch=batch), tmp_path / "zero.onnx")
        assert run_cli(["augment", path, "-o", tmp_path / "z.onnx", "--force"], capsys)[0] == 0
        if batch == 0:  # a batch fixed to 0 in the model: onnxruntime may refuse, cleanly
            try:
                session = ort.InferenceSession(str(tmp_path / "z.onnx"), providers=CPU)
                session.run(None, feeds)
            except Exception as exc:
                assert "shape" in str(exc).lower()
            continue
        session = ort.InferenceSession(str(tmp_path / "z.onnx"), providers=CPU)
        outputs = session.run(None, feeds)  # a dynamic batch runs empty
        assert all(o.shape[0] == 0 for o in outputs)
    empty = FullGrad(SAMPLE, device="cpu").explain(np.zeros((0, 3, 64, 64), np.float32))
    assert len(empty) == 0 and empty.saliency.shape[0] == 0


def test_augmenting_twice_or_over_our_names_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    once = tmp_path / "m.fg.onnx"
    assert run_cli(["augment", SAMPLE, "-o", once], capsys)[0] == 0
    assert_clean_failure(["augment", once, "-o", tmp_path / "twice.onnx"], capsys,
                         "the model is already augmented by fg-onnx; augment the original model")
    clash = tiny_cnn()
    clash.graph.node[-1].output[0] = clash.graph.output[0].name = "fg_score"
    assert_clean_failure(["augment", save(clash, tmp_path / "clash.onnx"), "-o",
                          tmp_path / "c.onnx"], capsys,
                         "the model already has a tensor named 'fg_score', which fg-onnx needs")


@pytest.mark.parametrize("command", [["explain"], ["evaluate", "--methods", "gradient"]])
def test_explain_and_evaluate_name_the_inputs_they_cannot_supply(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    two = save(_two_input_model(), tmp_path / "two.onnx")
    assert_clean_failure([command[0], two, IMAGES / "circle.png", *command[1:], "--input", "x2",
                          "-o", tmp_path / "out", "--device", "cpu"], capsys,
                         f"{command[0]} cannot supply the model's other input(s) 'x': it feeds "
                         "images to 'x2' only")
