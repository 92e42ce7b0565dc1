"""The values fg-onnx's options may take, as types, and the tensor axes a layout implies."""

from __future__ import annotations

from typing import Literal, get_args

Layout = Literal["nchw", "nhwc"]
"""Where an image batch keeps its channels."""
LayoutChoice = Literal["auto", "nchw", "nhwc"]
"""A layout to use, or "auto": read it off the graph."""
Provider = Literal["any", "cpu"]
"""Where an augmented model will run: any onnxruntime provider, or the CPU provider only."""
Precision = Literal["float32", "float16"]
"""What the network and its backward pass compute in."""
SequenceLayout = Literal["auto", "ntc", "tnc"]
"""Where a CTC head's [N, T, C] / [T, N, C] output keeps its batch, or "auto": read it off
the graph (fg_onnx.graph.batch_axis)."""
GraphMethod = Literal["fullgrad", "simple-fullgrad", "gradient", "gradient-x-input",
                      "grad-cam", "grad-cam++"]
"""The maps an augmented model can compute in ``fg_saliency`` (fg_onnx.fullgrad.maps)."""

LAYOUTS: tuple[Layout, ...] = get_args(Layout)
LAYOUT_CHOICES: tuple[LayoutChoice, ...] = get_args(LayoutChoice)
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
GRAPH_METHODS: tuple[GraphMethod, ...] = get_args(GraphMethod)
SEQUENCE_LAYOUTS: tuple[SequenceLayout, ...] = get_args(SequenceLayout)


def channel_axis(layout: Layout | str) -> int:
    """The channel axis of a rank-4 tensor in ``layout``."""
    return 1 if layout == "nchw" else 3


def spatial_axes(layout: Layout | str) -> tuple[int, int]:
    """The (height, width) axes of a rank-4 tensor in ``layout``."""
    return (2, 3) if layout == "nchw" else (1, 2)


def sequence_batch_axis(layout: SequenceLayout | str) -> int:
    """The batch axis of a sequence output in ``layout`` (ntc or tnc)."""
    return 1 if layout == "tnc" else 0
