"""The shared option groups: each command's arguments become the library's option objects."""

from __future__ import annotations

import argparse

import pytest

from fg_onnx.cli.main import build_parser
from fg_onnx.cli.options import (
    add_augment_options,
    add_runtime_options,
    augment_options,
    runtime_options,
)


def test_augment_keeps_its_own_options_and_explain_the_defaults() -> None:
    parser = build_parser()
    augment = parser.parse_args(["augment", "m.onnx", "--seed-input", "--components",
                                 "--method", "grad-cam", "--provider", "cpu",
                                 "--input-size", "32x48", "--implicit-biases"])
    options = augment_options(augment, method=augment.method, provider=augment.provider,
                              seed_input=augment.seed_input, components=augment.components)
    assert (options.seed_input, options.components, options.method, options.provider) == \
        (True, True, "grad-cam", "cpu")
    assert options.input_size == (32, 48) and options.implicit_biases
    explain = parser.parse_args(["explain", "m.onnx", "x.png", "--layout", "nhwc"])
    options = augment_options(explain)
    assert (options.seed_input, options.components, options.method, options.provider) == \
        (False, False, "fullgrad", "any")
    assert options.layout == "nhwc" and options.input_size is None


def test_runtime_group_refuses_a_batch_size_below_one() -> None:
    parser = argparse.ArgumentParser()
    add_runtime_options(parser)
    add_augment_options(parser)
    runtime = runtime_options(parser.parse_args(["--device", "cpu", "--batch-size", "3"]))
    assert (runtime.device, runtime.batch_size) == ("cpu", 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-size", "0"])
