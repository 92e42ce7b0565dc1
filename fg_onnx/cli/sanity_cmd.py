"""``fg-onnx sanity``: do the maps change when the model's weights are randomised?"""

from __future__ import annotations

import argparse
import sys

from fg_onnx.cli import SUMMARIES
from fg_onnx.cli.model_input import readable_images, require_one_input
from fg_onnx.cli.options import (
    add_augment_options,
    add_method_options,
    add_model_and_images,
    add_output_options,
    add_preprocess_options,
    add_runtime_options,
    augment_options,
    method_params,
    methods_list,
    preprocess_options,
    runtime_options,
)
from fg_onnx.cli.outputs import SANITY_FILES, check_outdir, is_result_name, output_folder
from fg_onnx.cli.progress import Progress, status
from fg_onnx.cli.reports import write_sanity_report
from fg_onnx.errors import FgOnnxError
from fg_onnx.evaluation import sanity_report
from fg_onnx.evaluation.sanity import SanityConfig, find_layers, sanity_checks
from fg_onnx.evaluation.scorer import Scorer
from fg_onnx.files import write_bytes_atomic
from fg_onnx.fullgrad.maps import GRAPH_MAPS
from fg_onnx.graph.load import load_model
from fg_onnx.graph.normalize import normalize
from fg_onnx.report.html import REPORT_NAME
from fg_onnx.vision.images import iter_image_paths
from fg_onnx.vision.overlay import save_png
from fg_onnx.vision.preprocess import preprocess_batch

OUTPUTS = (*SANITY_FILES, REPORT_NAME)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``sanity`` sub-command."""
    parser = commands.add_parser(
        "sanity", help=SUMMARIES["sanity"],
        description="Adebayo et al.'s sanity checks: redraw the weights of the model's layers "
                    "(output layer first, one more per step; then one layer at a time), "
                    "explain the same images with each randomised model and compare the maps "
                    "with the original ones (Spearman rank correlation of |map|, SSIM); also "
                    "the map of a random other class. Writes sanity.md, sanity.json, "
                    "sanity.png, sanity_grid.png and report.html.",
    )
    add_model_and_images(parser, "ONNX model (the original, not augmented)")
    parser.add_argument("--methods", type=methods_list, default=list(GRAPH_MAPS),
                        help="comma-separated methods (default: every in-graph method)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the redrawn weights and the random class")
    add_output_options(parser, "fg_sanity")
    add_preprocess_options(parser)
    add_runtime_options(parser)
    add_method_options(parser)
    add_augment_options(parser)
    parser.set_defaults(run=run, needs_runtime=True)


def run(args: argparse.Namespace) -> int:
    """Runs the checks and writes the tables, the plots and the report."""
    check_outdir(args.outdir, OUTPUTS, args.force)
    methods = [m for m in args.methods if m != "random"]
    if not methods:
        raise FgOnnxError("give at least one method other than random")
    options = augment_options(args)
    runtime = runtime_options(args)
    model = normalize(load_model(args.model))
    scorer = Scorer(model, options, device=runtime.device, batch_size=runtime.batch_size)
    require_one_input(scorer.session, scorer.input_name, "sanity")
    layers = find_layers(model)
    if not layers:
        raise FgOnnxError("the model has no layer with constant weights (Conv, Gemm, MatMul "
                          "by a constant, normalisation) to randomise")
    paths = iter_image_paths(args.images, outdir=args.outdir, is_output=is_result_name)
    read, images = readable_images(paths)
    batch = preprocess_batch(images, preprocess_options(args, scorer))
    config = SanityConfig(tuple(methods), seed=args.seed,
                          params=method_params(args, seed=args.seed), options=options,
                          device=runtime.device, batch_size=runtime.batch_size)
    with output_folder(args.outdir):
        print(f"sanity checks of {len(methods)} method(s) on {len(read)} image(s), "
              f"{len(layers)} layers ({scorer.provider.active})", file=sys.stderr)
        bar = Progress(2 * len(layers) + 1, "sanity", unit="models")

        def step(text: str) -> None:
            status(text)
            bar.advance()

        result = sanity_checks(model, batch, config, progress=step)
        bar.finish()
        table = sanity_report.markdown(result)
        write_bytes_atomic(args.outdir / "sanity.md", table.encode())
        write_bytes_atomic(args.outdir / "sanity.json", sanity_report.to_json(result).encode())
        save_png(args.outdir / "sanity.png", sanity_report.plot(result))
        save_png(args.outdir / "sanity_grid.png", sanity_report.grid(result))
        write_sanity_report(args.outdir, result, model=args.model)
    print(table, end="")
    print(f"wrote {', '.join(str(args.outdir / n) for n in OUTPUTS)}")
    return 1 if len(read) < len(paths) else 0
