"""What ``fg-onnx --help`` and ``--version`` say, and the size options' one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
import pytest
from helpers import with_symbolic_dims

import fg_onnx
from fg_onnx.cli.main import build_parser, main

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = ROOT / "sample_models" / "images"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["augment", "explain", "evaluate"])
def test_every_option_and_argument_has_help(command: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser = _commands()[command]
    missing = [action.dest for action in parser._actions if not action.help]
    assert missing == []
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "%%" not in text
    assert "--device" in text or command == "augment"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fg-onnx {fg_onnx.__version__}"


@pytest.mark.parametrize("command", ["explain", "evaluate"])
@pytest.mark.parametrize("fixed", [False, True])
def test_a_size_the_model_does_not_take_is_one_line(
        command: str, fixed: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx.load(SAMPLE)
    flags = ["--size", "32x32"]
    if not fixed:  # open H and W, fixed by --input-size
        model = with_symbolic_dims(model, {"image": ["N", 3, "H", "W"]})
        flags += ["--input-size", "64x64"]
    onnx.save(model, tmp_path / "model.onnx")
    out = tmp_path / "out"
    assert main([command, str(tmp_path / "model.onnx"), str(IMAGES / "circle.png"), "-o",
                 str(out), "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime" not in err
    assert "the model takes 64x64 inputs" in err and "--size resizes the images to 32x32" in err
    assert not out.exists()
