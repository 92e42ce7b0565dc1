"""The augment pass: one ONNX model that outputs FullGrad maps next to its own outputs, as
fg_onnx.fullgrad.contract defines them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

from fg_onnx.choices import (
    LAYOUT_CHOICES,
    PROVIDERS,
    GraphMethod,
    LayoutChoice,
    Precision,
    Provider,
    SequenceLayout,
    channel_axis,
    spatial_axes,
)
from fg_onnx.errors import FgOnnxError, UnsupportedModelError, one_line
from fg_onnx.fullgrad.aggregate import MapSize, RuntimeSize, per_sample_sum
from fg_onnx.fullgrad.cam import find_cam_layer
from fg_onnx.fullgrad.channels import channel_axes
from fg_onnx.fullgrad.contract import (
    BIAS_TOTAL,
    GRAD_OUTPUT,
    INPUT_GRAD,
    SALIENCY,
    SCORE,
    TARGET,
    TARGET_USED,
    AugmentFacts,
    is_augmented,
    tap_output,
    write_facts,
)
from fg_onnx.fullgrad.explained import (
    Explained,
    choose_input,
    detect_layout,
    explained_batch_axis,
    resolve,
)
from fg_onnx.fullgrad.maps import CAM_LAYER_MAPS, MapInputs, graph_map, map_term
from fg_onnx.fullgrad.precision import Numerics, check_precision
from fg_onnx.fullgrad.sizes import canonical, equal_size_dims
from fg_onnx.fullgrad.taps import Tap, is_exact_with, make_taps, tap_description
from fg_onnx.grad.backprop import active_nodes, build_backward
from fg_onnx.grad.registry import Cotangents, VJPContext
from fg_onnx.grad.rules.recurrent import RECURRENT_OPS
from fg_onnx.graph.batch_axis import batch_axes
from fg_onnx.graph.builder import GraphBuilder
from fg_onnx.graph.float16 import to_float16
from fg_onnx.graph.info import GraphInfo, Shape
from fg_onnx.graph.load import ModelSource, load_model
from fg_onnx.graph.normalize import normalize
from fg_onnx.graph.save import check_model


@dataclass
class AugmentOptions:
    """What to explain and how (see ``fg-onnx augment --help``)."""

    input: str | None = None
    output: str | None = None
    layout: LayoutChoice = "auto"
    implicit_biases: bool = False
    explain_probabilities: bool = False
    seed_input: bool = False
    components: bool = False
    input_size: tuple[int, int] | None = None
    method: GraphMethod = "fullgrad"
    """The map in ``fg_saliency`` (fg_onnx.fullgrad.maps)."""
    cam_layer: str | None = None
    """Grad-CAM's activation (default: the last rank-4 Conv output on the gradient path)."""
    provider: Provider = "any"
    """Where the augmented model will run: "any" onnxruntime provider, or "cpu" only (allows
    ops that only onnxruntime's CPU provider runs well; see VJPContext.provider)."""
    precision: Precision = "float32"
    """"float16" runs the network and its backward pass in float16 (the model's inputs and
    outputs stay float32; see fg_onnx.fullgrad.precision)."""
    gradient_scale: float | None = None
    """float16 only: the factor on the backward seed (default DEFAULT_GRADIENT_SCALE)."""
    sequence_layout: SequenceLayout = "auto"
    """seed_input only: a [N, T, C] ("ntc") or [T, N, C] ("tnc") explained tensor, where
    the graph does not say which axis is the batch (a CTC head of a fixed batch of 1)."""


@dataclass
class AugmentResult:
    """The augmented model and what was done to it."""

    model: onnx.ModelProto
    explained: Explained
    taps: list[Tap]
    differentiated: Counter[str]
    new_inputs: list[str]
    new_outputs: list[str]
    unexplained_nonlinear: list[str] = field(default_factory=list)
    method: GraphMethod = "fullgrad"
    cam_layer: str | None = None

    def summary(self) -> str:
        """A few lines for people."""
        kinds = Counter(t.kind for t in self.taps)
        ex = self.explained
        lines = [
            f"explained input: {ex.input} ({ex.layout.upper()})",
            f"explained output: {ex.output}"
            + (f" (logits before its {ex.skipped_op}"
               + (f", skipped through {', '.join(ex.skipped_through)}" if ex.skipped_through
                  else "") + f": {ex.scores})" if ex.skipped_op else ""),
            f"bias taps: {len(self.taps)} ("
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")",
            f"ops differentiated: {sum(self.differentiated.values())} nodes ("
            + ", ".join(f"{op} {n}" for op, n in self.differentiated.most_common()) + ")",
            f"new inputs: {', '.join(self.new_inputs)}",
            f"new outputs: {', '.join(self.new_outputs)}",
        ]
        if self.method != "fullgrad":
            lines.append(f"fg_saliency holds: {self.method}"
                         + (f" at {self.cam_layer}" if self.cam_layer else ""))
        if self.unexplained_nonlinear:
            lines.append(
                f"note: {len(self.unexplained_nonlinear)} non-homogeneous nodes (e.g. "
                f"{', '.join(self.unexplained_nonlinear[:3])}) have no implicit-bias taps; "
                "completeness is approximate (use --implicit-biases)"
            )
        return "\n".join(lines)


def build_fullgrad(source: ModelSource, options: AugmentOptions | None = None) -> AugmentResult:
    """Builds the FullGrad model for ``source`` (path or ModelProto; it is not modified)."""
    options = options or AugmentOptions()
    _check_method(options)
    model = load_model(source)
    if is_augmented(model):
        raise UnsupportedModelError("the model is already augmented by fg-onnx; augment the "
                                    "original model")
    owned = not isinstance(source, onnx.ModelProto)  # loaded here: no copy needed
    if options.input_size is not None:
        model, owned = _fix_input_size(model, options), True
    model = normalize(model, in_place=owned)
    info = GraphInfo(model)
    explained = resolve(info, options.input, options.output, options.explain_probabilities,
                        options.layout, options.seed_input)
    return _Augmenter(model, info, explained, options).run()


def _check_method(options: AugmentOptions) -> None:
    if options.cam_layer is not None and not graph_map(options.method).reads_cam_layer:
        raise FgOnnxError(f"--cam-layer applies to {' and '.join(CAM_LAYER_MAPS)}, not to "
                          f"{options.method}")
    check_precision(options.precision, options.gradient_scale)
    if options.layout not in LAYOUT_CHOICES:
        raise FgOnnxError(f"unknown layout {options.layout!r}; use one of "
                          f"{', '.join(LAYOUT_CHOICES)}")
    if options.provider not in PROVIDERS:
        raise FgOnnxError(f"unknown provider {options.provider!r}; use one of "
                          f"{', '.join(PROVIDERS)}")


def _fix_input_size(model: onnx.ModelProto, options: AugmentOptions) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    info = GraphInfo(copy)
    name = choose_input(info, options.input)
    layout = detect_layout(info, name, options.layout)
    value = next(v for v in copy.graph.input if v.name == name)
    dims = value.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise UnsupportedModelError(f"input {name!r} has rank {len(dims)}; FullGrad maps need "
                                    "an image input of rank 4")
    axes = spatial_axes(layout)
    assert options.input_size is not None
    # A fixed size is part of the model (a Flatten + Gemm head depends on it): only a size
    # left open may be set.
    fixed = [dims[a].dim_value if dims[a].dim_value > 0 else None for a in axes]
    if any(f is not None and f != size for f, size in zip(fixed, options.input_size,
                                                          strict=True)):
        shown = "x".join("?" if f is None else str(f) for f in fixed)
        raise FgOnnxError(f"input {name!r} is fixed at {shown}; --input-size "
                          f"{'x'.join(map(str, options.input_size))} differs (leave it out)")
    for axis, size in zip(axes, options.input_size, strict=True):
        dims[axis].Clear()
        dims[axis].dim_value = size
    del copy.graph.value_info[:]
    return copy


class _Augmenter:
    def __init__(self, model: onnx.ModelProto, info: GraphInfo, explained: Explained,
                 options: AugmentOptions) -> None:
        self.model, self.info, self.ex, self.options = model, info, explained, options
        self.b = GraphBuilder(info)
        self.elem = info.elem_type(explained.input)
        self.taps: list[Tap] = []
        self.channel_axes = channel_axes(info, explained.input, channel_axis(explained.layout))
        self.nonlinear: list[str] = []
        self.new_inputs: list[str] = []
        self.new_outputs: list[str] = []
        self.batch = self.b.Slice(self.b.Shape(explained.input), self.b.ints([0]),
                                  self.b.ints([1]))
        self.cam_layer: str | None = None
        self._map_size: MapSize | None = None
        self._equal_dims: dict[str, str] = {}
        self.batch_axes = self._batch_axes()
        half = options.precision == "float16"
        if half and self.elem != TensorProto.FLOAT:
            raise UnsupportedModelError(
                f"--precision float16 converts float32 models; input {explained.input!r} is "
                f"{helper.tensor_dtype_to_string(self.elem).removeprefix('TensorProto.')}")
        self.numerics = Numerics(self.b, self.elem, half,
                                 check_precision(options.precision, options.gradient_scale))

    def run(self) -> AugmentResult:
        self._input_size()  # fails early when the input is not an image batch
        seed, score, target_used = self._seed()
        wrt = [self.ex.input]
        if graph_map(self.options.method).reads_cam_layer:
            path = active_nodes(self.info, {self.ex.scores}, {self.ex.input})
            self.cam_layer = find_cam_layer(self.info, path, self.options.cam_layer)
            wrt.append(self.cam_layer)
        if self.numerics.half:
            self._refuse_recurrent_in_half()
        backward = build_backward(self.info, self.b, {self.ex.scores: seed}, wrt,
                                  on_node=self._on_node, provider=self.options.provider)
        input_grad = backward.grads[self.ex.input]
        if input_grad is None:
            raise UnsupportedModelError(
                f"output {self.ex.scores!r} does not depend on input {self.ex.input!r}"
            )
        batch_dim = (self.info.shape(self.ex.input) or ("N",))[0]
        if self.ex.output not in self.info.graph_outputs:  # an inner tensor (--output)
            output = self.ex.output
            self.model.graph.output.append(helper.make_tensor_value_info(
                output, self.info.elem_type(output), self.info.shape(output)))
            self.new_outputs.append(output)
        if self.options.seed_input and self.ex.scores not in (
                *self.info.graph_outputs, self.ex.output):
            # A seed is built from the explained tensor's values (a box's class logit, a
            # region of a class's mask): a deployed model shows them beside fg_grad_output.
            self.model.graph.output.append(helper.make_tensor_value_info(
                self.ex.scores, self.info.elem_type(self.ex.scores),
                self.info.shape(self.ex.scores)))
            self.new_outputs.append(self.ex.scores)
        self._output(SCORE, score, [batch_dim])
        if target_used is not None:
            self._output(TARGET_USED, target_used, [batch_dim], TensorProto.INT64)
        unscaled_grad = self.numerics.unscaled(input_grad)
        self._output(INPUT_GRAD, unscaled_grad, self.info.shape(self.ex.input))
        self._output(BIAS_TOTAL, self._bias_total(), [batch_dim])
        saliency = self._saliency(unscaled_grad, backward.grads)
        size = self._input_size()
        self._output(SALIENCY, saliency, [batch_dim, *(size if isinstance(size, tuple)
                                                      else size.dims)])
        map_taps = [tap for tap in self.taps if map_term(tap, tap.product) is not None]
        if self.options.components:
            for i, tap in enumerate(map_taps):
                assert tap.product is not None
                self._output(tap_output(i), self.numerics.unscaled(tap.product), tap.shape)
        self._metadata(map_taps)
        self.b.apply_to(self.model)
        if self.numerics.half:
            to_float16(self.model, self.numerics.float32)
        _check(self.model)
        return AugmentResult(self.model, self.ex, self.taps, backward.differentiated,
                             self.new_inputs, self.new_outputs, self.nonlinear,
                             self.options.method, self.cam_layer)

    def _refuse_recurrent_in_half(self) -> None:
        """A recurrent layer's backward pass is a Scan, which the float16 conversion does
        not take (fg_onnx/graph/float16.py): say so before building it."""
        for node in active_nodes(self.info, {self.ex.scores}, {self.ex.input}):
            if node.op_type in RECURRENT_OPS:
                raise UnsupportedModelError(
                    f"--precision float16 does not support recurrent layers ({node.op_type} "
                    f"node {node.name!r}: its backward pass is a Scan); use float32")

    def _on_node(self, ctx: VJPContext, gy: Cotangents, grads: Sequence[str | None]) -> None:
        taps = make_taps(ctx, gy, grads, self.options.implicit_biases, self.numerics)
        for tap in taps:
            tap.map_axis = self.channel_axes.get(ctx.output(0))
            self.taps.append(tap)
        if any(g is not None for g in gy) and not self.options.implicit_biases and (
                not is_exact_with(ctx, taps)):
            self.nonlinear.append(ctx.node.name or ctx.node.op_type)

    def _seed(self) -> tuple[str, str, str | None]:
        b, scores = self.b, self.ex.scores
        if self.options.seed_input:
            seed = b.reserve(GRAD_OUTPUT)
            self._input(seed, self.info.elem_type(scores), self.info.shape(scores))
            score = self.numerics.sample_total(self._batch_first(b.Mul(seed, scores)),
                                               self.batch)
            if self.numerics.scale != 1.0:
                seed = b.Mul(seed, b.scalar(self.numerics.scale, self.elem))
            return seed, score, None
        target = b.reserve(TARGET)
        batch_dim = (self.info.shape(self.ex.input) or ("N",))[0]
        self._input(target, TensorProto.INT64, [batch_dim])
        # [N, C, 1, 1] scores (a final 1x1 convolution) are read as [N, C]
        rank = self.info.rank(scores)
        classes = scores if rank in (None, 2) else b.Flatten(scores, axis=1)
        predicted = b.ArgMax(classes, axis=1, keepdims=0)
        used = b.Where(b.Less(target, b.const(0, dtype="int64")), predicted, target)
        depth = b.Slice(b.Shape(classes), b.ints([1]), b.ints([2]))
        values = b.const([0, self.numerics.scale],
                         dtype=helper.tensor_dtype_to_np_dtype(self.elem))
        seed = b.OneHot(used, depth, values, axis=-1)
        if classes != scores:
            seed = b.Reshape(seed, b.Shape(scores))
        score = b.Squeeze(b.GatherElements(classes, b.Unsqueeze(used, b.ints([1])), axis=1),
                          b.ints([1]))
        return seed, score, used

    def _batch_axes(self) -> dict[str, int]:
        """The batch axes other than 0 of what a seed-input model's forward part returns
        (its outputs and the explained tensor: a [T, N, C] CTC head), by name, and the
        explained tensor's 0 where the graph says it (for targets to tell it from a sequence
        layout nothing gave); axis 0 where the graph does not say."""
        ex, layout = self.ex, self.options.sequence_layout
        if not self.options.seed_input:
            if layout != "auto":
                raise FgOnnxError("--sequence-layout is for targets (a seed-input model)")
            return {}
        names = list(dict.fromkeys([*self.info.graph_outputs, ex.output, ex.scores]))
        found = batch_axes(self.model, self.info, ex.input, names,
                           spatial_axes(ex.layout)[1])
        found[ex.scores] = explained_batch_axis(self.info, ex, layout, found[ex.scores])
        if found[ex.output] is None and self.info.shape(ex.output) == self.info.shape(
                ex.scores):
            found[ex.output] = found[ex.scores]  # through the skipped Softmax
        return {name: axis for name, axis in found.items()
                if axis or (name == ex.scores and axis is not None)}

    def _batch_first(self, tensor: str) -> str:
        """A tensor shaped like the explained one with its batch axis moved first."""
        axis = self.batch_axes.get(self.ex.scores, 0)
        if not axis:
            return tensor
        rank = self.info.rank(self.ex.scores) or 3  # only a sequence layout gives no shape
        return self.b.Transpose(tensor, perm=[axis, *(a for a in range(rank) if a != axis)])

    def _bias_total(self) -> str:
        b, numerics = self.b, self.numerics
        terms = []
        for tap in self.taps:
            if tap.bias_is_zero:
                continue
            for part in tap.total_parts:
                total = (per_sample_sum(b, part.tensor, self.batch) if part.wide
                         else numerics.sample_total(part.tensor, self.batch))
                terms.append(total if part.sign > 0 else b.Neg(total))
        if not terms:
            zero = helper.make_tensor("zero", numerics.elem, [1], [0])
            return b.ConstantOfShape(self.batch, value=zero)
        return numerics.descale(b.add_all(terms))

    def _input_size(self) -> MapSize:
        """The map's (H, W): the input's, static or (when not fixed) read at run time."""
        if self._map_size is not None:
            return self._map_size
        shape = self.info.shape(self.ex.input)
        if shape is None or len(shape) != 4:
            raise UnsupportedModelError(
                f"input {self.ex.input!r} has shape {None if shape is None else list(shape)}; "
                "FullGrad maps need an image input of rank 4")
        axes = spatial_axes(self.ex.layout)
        height, width = (shape[a] for a in axes)
        if isinstance(height, int) and isinstance(width, int):
            self._map_size = (height, width)
        else:  # any size the model takes: sizes are computed in the graph from Shape(input)
            sizes = self.b.Shape(self.ex.input, start=axes[0], end=axes[1] + 1)
            self._equal_dims = equal_size_dims(self.info)
            self._map_size = RuntimeSize(canonical((height, width), self._equal_dims), sizes)
        return self._map_size

    def _saliency(self, input_grad: str, grads: dict[str, str | None]) -> str:
        """The map of ``options.method`` (fg_onnx.fullgrad.maps); ``input_grad`` is unscaled
        and float32 in a float16 model (Numerics.unscaled), as the input is small."""
        axis = channel_axis(self.ex.layout)
        cam = None if self.cam_layer is None else (self.cam_layer, grads.get(self.cam_layer))
        inputs = MapInputs(self.b, self.numerics, self.ex.input, input_grad, axis,
                           (self.info.shape(self.ex.input) or (None,) * 4)[axis],
                           self._input_size(), self.batch, self.taps, cam, self._equal_dims)
        return graph_map(self.options.method).build(inputs)

    def _input(self, name: str, elem: int, shape: Shape | list[object] | None) -> None:
        self.model.graph.input.append(helper.make_tensor_value_info(name, elem, shape))  # type: ignore[arg-type]
        self.new_inputs.append(name)

    def _output(self, name: str, tensor: str, shape: Shape | list[object] | None,
                elem: int | None = None) -> None:
        public = self.b.reserve(name)
        self.b.op_multi("Identity", tensor, outputs=[public])
        value = helper.make_tensor_value_info(public, elem or self.elem, shape)  # type: ignore[arg-type]
        self.model.graph.output.append(value)
        self.new_outputs.append(public)

    def _metadata(self, map_taps: list[Tap]) -> None:
        ex, options = self.ex, self.options
        components = [{"output": tap_output(i), **tap_description(t)}
                      for i, t in enumerate(map_taps)] if options.components else []
        write_facts(self.model, AugmentFacts(
            ex.input, ex.output, ex.scores, ex.skipped_op, ex.layout, options.implicit_biases,
            options.seed_input, options.method, self.cam_layer, options.precision,
            self.numerics.scale, [tap_description(t) for t in self.taps], components,
            self.batch_axes))


def _check(model: onnx.ModelProto) -> None:
    try:
        check_model(model, full_check=True)  # over 2 GB: without the weights
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UnsupportedModelError(
            f"internal error: the augmented model fails onnx.checker: {one_line(exc)}"
        ) from exc
    except OSError as exc:
        raise FgOnnxError(
            f"could not write the temporary copy onnx.checker reads: {exc.strerror or exc}"
        ) from exc
