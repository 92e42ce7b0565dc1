"""``fg-onnx augment``: write the FullGrad model."""

from __future__ import annotations

import argparse
from pathlib import Path

from fg_onnx.choices import GRAPH_METHODS, PROVIDERS
from fg_onnx.cli import SUMMARIES
from fg_onnx.cli.options import (
    add_augment_options,
    add_sequence_layout_option,
    augment_options,
)
from fg_onnx.errors import OutputExistsError
from fg_onnx.fullgrad.augment import build_fullgrad
from fg_onnx.graph.load import load_model
from fg_onnx.graph.normalize import blaming_invalid_input
from fg_onnx.graph.save import check_output_path, data_file_of, is_large, save_model_atomic


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``augment`` sub-command."""
    parser = commands.add_parser(
        "augment", help=SUMMARIES["augment"],
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
    add_sequence_layout_option(parser)
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
    parser.set_defaults(run=run, needs_runtime=False)


def default_output(model: Path) -> Path:
    """``dir/name.onnx`` -> ``dir/name.fg.onnx``."""
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.fg.onnx")


def run(args: argparse.Namespace) -> int:
    """Augments and writes the model, then prints the summary."""
    out = args.out or default_output(args.model)
    check_output_path(out, args.force, args.model)
    options = augment_options(args, method=args.method, provider=args.provider,
                              seed_input=args.seed_input, components=args.components,
                              sequence_layout=args.sequence_layout)
    result = blaming_invalid_input(load_model(args.model),
                                   lambda model: build_fullgrad(model, options))
    if is_large(result.model) and data_file_of(out).exists() and not args.force:
        raise OutputExistsError(f"{data_file_of(out)} already exists; pass --force to "
                                "overwrite it")
    save_model_atomic(result.model, out)
    print(result.summary())
    print(f"wrote {out}")
    return 0
