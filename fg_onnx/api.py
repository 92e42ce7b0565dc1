"""The public Python API."""

from __future__ import annotations

import onnx

from fg_onnx.choices import LayoutChoice, Precision, Provider
from fg_onnx.fullgrad.augment import AugmentOptions, AugmentResult, build_fullgrad
from fg_onnx.graph.load import ModelSource


def augment(
    model: ModelSource,
    *,
    input: str | None = None,
    output: str | None = None,
    layout: LayoutChoice = "auto",
    implicit_biases: bool = False,
    explain_probabilities: bool = False,
    seed_input: bool = False,
    components: bool = False,
    input_size: tuple[int, int] | None = None,
    provider: Provider = "any",
    precision: Precision = "float32",
    gradient_scale: float | None = None,
) -> onnx.ModelProto:
    """Returns ``model`` augmented with FullGrad outputs (the same contract as the CLI).

    Args:
        model: path of an ONNX file or a ModelProto (not modified).
        input: explained input; default the only float input.
        output: explained output; default the first. A final Softmax, LogSoftmax or Sigmoid
            is skipped to explain the logits unless ``explain_probabilities``.
        layout: "auto", "nchw" or "nhwc".
        implicit_biases: add implicit-bias taps so completeness holds for any network.
        explain_probabilities: explain the probability output itself.
        seed_input: take the output cotangent as input ``fg_grad_output`` instead of a class.
        components: also output each map tap's bias-gradient tensor.
        input_size: (H, W) to fix an input whose spatial size is symbolic.
        provider: "any" onnxruntime provider (default) or "cpu" only, which allows faster
            CPU-only ops (MaxUnpool for max pools with disjoint windows).
        precision: "float32" (default) or "float16": the network and its backward pass in
            float16, the model's inputs and outputs still float32.
        gradient_scale: float16 only: the factor on the backward seed that keeps small
            gradients out of float16's underflow (default 256); outputs are unscaled.
    """
    return augment_with_report(
        model, AugmentOptions(input, output, layout, implicit_biases, explain_probabilities,
                              seed_input, components, input_size, provider=provider,
                              precision=precision, gradient_scale=gradient_scale)
    ).model


def augment_with_report(model: ModelSource, options: AugmentOptions | None = None) -> AugmentResult:
    """Like :func:`augment`, also returning the explained tensors, taps and summary."""
    return build_fullgrad(model, options)
