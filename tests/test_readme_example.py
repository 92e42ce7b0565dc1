"""README's Python example runs as printed."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np

import fg_onnx
from fg_onnx.runtime.session import FullGrad
from fg_onnx.vision.images import load_image
from fg_onnx.vision.preprocess import preprocess_batch, preset

ROOT = Path(__file__).parents[1]


def test_the_python_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "load_batch" in b]
    assert len(blocks) == 1
    printed = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(printed):
            exec(compile(blocks[0], "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    lines = printed.getvalue().splitlines()
    assert lines[1] == "(2, 64, 64)" and lines[2] == "(1, 64, 64)"


def test_load_batch_is_what_explain_feeds() -> None:
    fullgrad = FullGrad(ROOT / "sample_models" / "shapes_cnn.onnx", device="cpu")
    path = ROOT / "sample_models" / "images" / "circle_small.jpg"
    expected = preprocess_batch([load_image(path)], preset("imagenet", (64, 64)))
    np.testing.assert_array_equal(fg_onnx.load_batch([path], fullgrad), expected)
    zero_one = fg_onnx.load_batch([load_image(path)], fullgrad, preset="zero-one")
    np.testing.assert_allclose(zero_one, preprocess_batch([load_image(path)],
                                                          preset("zero-one", (64, 64))))
    assert {"FullGrad", "Explainer", "load_batch", "augment"} <= set(dir(fg_onnx))
