"""Shared helpers for the hardening tests: tiny models and one-line CLI error checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fg_onnx.cli.main import main

warnings.filterwarnings("ignore", category=DeprecationWarning)

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"
PREFIXES = ("fg-onnx: error:", "fg-onnx: skipped:")


def tiny_cnn(elem: int = TensorProto.FLOAT, batch: int | str = "N",
             size: tuple[int | str, int | str] = (8, 8), seed: int = 0) -> onnx.ModelProto:
    """Conv(bias) -> Relu -> GlobalAveragePool -> Flatten -> MatMul: 3 classes."""
    rng = np.random.default_rng(seed)
    dtype = np.float32 if elem == TensorProto.BFLOAT16 else helper.tensor_dtype_to_np_dtype(elem)

    def init(name: str, value: np.ndarray) -> TensorProto:
        if elem == TensorProto.BFLOAT16:
            return helper.make_tensor(name, elem, value.shape, value.ravel().tolist())
        return numpy_helper.from_array(value.astype(dtype), name)

    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "FW"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", elem, [batch, 3, *size])],
        [helper.make_tensor_value_info("y", elem, [batch, 3])],
        [init("W", rng.standard_normal((4, 3, 3, 3))), init("B", rng.standard_normal(4)),
         init("FW", rng.standard_normal((4, 3)))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Writes ``model`` and returns ``path``."""
    onnx.save(model, str(path))
    return path


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Runs the CLI in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str) -> None:
    """stderr is exactly one fg-onnx error line, with each needle in it, no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fg-onnx: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


def assert_clean_failure(argv: Sequence[str], capsys: pytest.CaptureFixture[str],
                         *needles: str) -> str:
    """The command exits 2 with one clean error line; returns that line."""
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert_one_line_error(err, *needles)
    return err.strip()


def only_file(folder: Path) -> list[str]:
    """Names in ``folder`` (to check that nothing stray was left)."""
    return sorted(p.name for p in folder.iterdir())
