"""``fg-onnx augment``: write the FullGrad model."""

from __future__ import annotations

import argparse
from pathlib import Path

from fg_onnx.choices import GRAPH_METHODS, LAYOUT_CHOICES, PRECISIONS, PROVIDERS
from fg_onnx.errors import OutputExistsError
from fg_onnx.fullgrad.augment import AugmentOptions, build_fullgrad
from fg_onnx.fullgrad.precision import DEFAULT_GRADIENT_SCALE
from fg_onnx.graph.load import load_model
from fg_onnx.graph.normalize import blaming_invalid_input
from fg_onnx.graph.save import check_output_path, data_file_of, is_large, save_model_atomic
from fg_onnx.vision.images import MAX_PIXELS


def parse_size(text: str) -> tuple[int, int]:
    """``224x224`` or ``224`` -> (224, 224)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxW with positive sizes, got {text!r}")
    # The images' own limit: larger inputs take gigabytes per image, and OpenCV or
    # onnxruntime would fail on them with errors that do not name the option.
    if sizes[0] * sizes[1] > MAX_PIXELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too large: {sizes[0] * sizes[1] / 1e6:.0f} megapixels, the limit is "
            f"{MAX_PIXELS / 1e6:.0f}")
    return sizes[0], sizes[1]


def add_augment_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that augments a model."""
    parser.add_argument("--input", help="explained input (default: the only float input)")
    parser.add_argument("--output", help="explained output (default: the first output)")
    parser.add_argument("--layout", default="auto", choices=LAYOUT_CHOICES,
                        help="input layout (default: detected from the graph)")
    parser.add_argument("--input-size", type=parse_size, metavar="HxW",
                        help="fix the input's spatial size when the model leaves it open")
    parser.add_argument("--implicit-biases", action="store_true",
                        help="add implicit-bias taps at every non-homogeneous node, so "
                             "completeness holds for any network")
    parser.add_argument("--explain-probabilities", action="store_true",
                        help="explain a final Softmax/LogSoftmax/Sigmoid output itself, not "
                             "the logits before it")
    parser.add_argument("--cam-layer", metavar="TENSOR",
                        help="grad-cam/grad-cam++ activation (default: the last Conv output "
                             "on the gradient path, after a BatchNorm/ReLU that follows it)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float16 runs the network and its backward pass in float16 "
                             "(for GPUs: onnxruntime's CPU provider computes float16 in "
                             "float32, slower; inputs and outputs stay float32; check the "
                             "completeness error)")
    parser.add_argument("--gradient-scale", type=float, metavar="S",
                        help=f"float16: start the backward pass from S times the one-hot "
                             f"class (default {DEFAULT_GRADIENT_SCALE:g}); lower it if maps "
                             "come out non-finite, raise it if completeness suffers from "
                             "tiny gradients")


def options_from_args(args: argparse.Namespace) -> AugmentOptions:
    """AugmentOptions from parsed arguments."""
    return AugmentOptions(
        input=args.input, output=args.output, layout=args.layout,
        implicit_biases=args.implicit_biases, explain_probabilities=args.explain_probabilities,
        seed_input=getattr(args, "seed_input", False),
        components=getattr(args, "components", False), input_size=args.input_size,
        method=getattr(args, "method", "fullgrad"), cam_layer=args.cam_layer,
        provider=getattr(args, "provider", "any"), precision=args.precision,
        gradient_scale=args.gradient_scale,
    )


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``augment`` sub-command."""
    parser = commands.add_parser(
        "augment", help="write a model that also outputs FullGrad saliency maps",
        description="Insert the gradient subgraph, bias taps and the FullGrad map into MODEL "
                    "and write the result (default: <stem>.fg.onnx beside MODEL).",
    )
    parser.add_argument("model", type=Path, help="ONNX model file")
    parser.add_argument("-o", "--out", type=Path, help="output path (default <stem>.fg.onnx)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_augment_options(parser)
    parser.add_argument("--seed-input", action="store_true",
                        help="replace fg_target by an input fg_grad_output shaped like the "
                             "explained output (any linear functional of it)")
    parser.add_argument("--components", action="store_true",
                        help="also output every map tap's bias-gradient tensor")
    parser.add_argument("--method", choices=GRAPH_METHODS, default="fullgrad",
                        help="what fg_saliency holds (default: fullgrad); the other outputs "
                             "stay the same")
    parser.add_argument("--provider", choices=PROVIDERS, default="any",
                        help="where the model will run: any onnxruntime provider (default), "
                             "or cpu only, which allows faster CPU-only ops (MaxUnpool for "
                             "max pools whose windows do not overlap; onnxruntime's CUDA "
                             "provider has no MaxUnpool)")
    parser.set_defaults(run=run)


def default_output(model: Path) -> Path:
    """``dir/name.onnx`` -> ``dir/name.fg.onnx``."""
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.fg.onnx")


def run(args: argparse.Namespace) -> int:
    """Augments and writes the model, then prints the summary."""
    out = args.out or default_output(args.model)
    check_output_path(out, args.force, args.model)
    options = options_from_args(args)
    result = blaming_invalid_input(load_model(args.model),
                                   lambda model: build_fullgrad(model, options))
    if is_large(result.model) and data_file_of(out).exists() and not args.force:
        raise OutputExistsError(f"{data_file_of(out)} already exists; pass --force to "
                                "overwrite it")
    save_model_atomic(result.model, out)
    print(result.summary())
    print(f"wrote {out}")
    return 0
