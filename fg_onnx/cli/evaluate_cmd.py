"""``fg-onnx evaluate``: which saliency method is faithful to the model, on your images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

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
    positive_int,
    preprocess_options,
    runtime_options,
)
from fg_onnx.cli.outputs import EVALUATION_FILES, check_outdir, is_result_name, output_folder
from fg_onnx.cli.progress import MethodProgress
from fg_onnx.cli.reports import write_evaluation_report
from fg_onnx.errors import FgOnnxError
from fg_onnx.evaluation import DEFAULT_KS, PerturbationConfig, evaluate, markdown, plot, to_json
from fg_onnx.evaluation.scorer import Scorer
from fg_onnx.files import write_bytes_atomic
from fg_onnx.methods import METHOD_NAMES
from fg_onnx.report.html import REPORT_NAME
from fg_onnx.vision.images import iter_image_paths
from fg_onnx.vision.masks import Mask, masks_from_boxes, masks_from_folder
from fg_onnx.vision.overlay import save_png
from fg_onnx.vision.preprocess import Preprocess, preprocess_batch

OUTPUTS = (*EVALUATION_FILES, REPORT_NAME)


def _percentages(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentages like 0.1,1,10, got {text!r}") \
            from None
    bad = [v for v in values if not 0 < v <= 100]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"k must be percentages in (0, 100], got {text!r}")
    return values


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``evaluate`` sub-command."""
    parser = commands.add_parser(
        "evaluate", help=SUMMARIES["evaluate"],
        description="Explain each image with every method, then remove the k % least salient "
                    "pixels (FullGrad paper, section 5.1) and, separately, the most salient "
                    "first (RISE deletion) and put back into a blurred copy first (RISE "
                    "insertion); compare with a random pixel order. With --masks or --boxes "
                    "also how well each map localises the object. Writes evaluation.md, "
                    "evaluation.json, evaluation.png and report.html.",
    )
    add_model_and_images(parser, "ONNX model (the original, not augmented)")
    parser.add_argument("--methods", type=methods_list, default=list(METHOD_NAMES),
                        help="comma-separated methods (default: all); random is always added")
    parser.add_argument("--k", type=_percentages, default=DEFAULT_KS, metavar="K,K,...",
                        help="percentages of least salient pixels removed (default "
                             + ",".join(f"{k:g}" for k in DEFAULT_KS) + ")")
    parser.add_argument("--deletion-steps", type=positive_int, default=20, metavar="N",
                        help="steps of the deletion and insertion curves (default 20)")
    parser.add_argument("--fill", choices=["mean", "black"], default="mean",
                        help="a removed pixel becomes the image's per-channel mean (default) "
                             "or black")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the random baseline, tie-breaking and noise")
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--masks", type=Path, metavar="DIR",
                       help="ground-truth masks, one image per input image with the same "
                            "stem (nonzero = object): adds pointing game, relevance mass and "
                            "rank accuracy and mask AUC per method")
    truth.add_argument("--boxes", type=Path, metavar="FILE",
                       help="ground-truth boxes as COCO-style JSON (images: id, file_name; "
                            "annotations: image_id, bbox [x, y, w, h] in pixels): the same "
                            "localisation numbers, on the union of each image's boxes")
    add_output_options(parser, "fg_eval")
    add_preprocess_options(parser)
    add_runtime_options(parser)
    add_method_options(parser)
    add_augment_options(parser)
    parser.set_defaults(run=run, needs_runtime=True)


def _black(spec: Preprocess) -> tuple[float, ...]:
    """The model input of a black pixel, per channel."""
    return tuple(-m / s for m, s in zip(spec.mean, spec.std, strict=True))


def run(args: argparse.Namespace) -> int:
    """Evaluates every method and writes the table and the plot."""
    check_outdir(args.outdir, OUTPUTS, args.force)
    params = method_params(args, seed=args.seed)
    options = augment_options(args)
    runtime = runtime_options(args)
    scorer = Scorer(args.model, options, device=runtime.device,
                    batch_size=max(64, runtime.batch_size))
    require_one_input(scorer.session, scorer.input_name, "evaluate")
    spec = preprocess_options(args, scorer)
    config = PerturbationConfig(ks=args.k, deletion_steps=args.deletion_steps,
                                fill=_black(spec) if args.fill == "black" else None,
                                seed=args.seed)
    paths = iter_image_paths(args.images, outdir=args.outdir, is_output=is_result_name)
    read, images = readable_images(paths)
    masks = _ground_truth(args, read, images)
    batch = preprocess_batch(images, spec)
    with output_folder(args.outdir):  # before the long part: a bad -o fails at once
        # One line for the run, though every method opens its own session.
        provider = "; ".join(n for n in (scorer.provider.active, scorer.provider.note) if n)
        print(f"evaluating {len(args.methods)} method(s) on {len(images)} image(s) "
              f"({provider})", file=sys.stderr)
        result = evaluate(args.model, batch, args.methods, config=config, params=params,
                          options=options, device=runtime.device, batch_size=runtime.batch_size,
                          scorer=scorer, masks=masks, progress=MethodProgress())
        if args.fill == "black":
            result.fill = "black pixel"
        table = markdown(result)
        write_bytes_atomic(args.outdir / "evaluation.md", table.encode())
        write_bytes_atomic(args.outdir / "evaluation.json", to_json(result).encode())
        save_png(args.outdir / "evaluation.png", plot(result))
        write_evaluation_report(args.outdir, result, model=args.model)
    print(table, end="")
    print(f"wrote {', '.join(str(args.outdir / n) for n in OUTPUTS)}")
    return 1 if len(images) < len(paths) else 0


def _ground_truth(args: argparse.Namespace, paths: list[Path],
                  images: list[npt.NDArray[np.uint8]]) -> list[Mask | None] | None:
    """The masks --masks or --boxes give, with one note for the images that have none and
    one for those whose mask is empty (both get no localisation numbers)."""
    if args.masks is None and args.boxes is None:
        return None
    if args.masks is not None:
        masks = masks_from_folder(args.masks, paths)
    else:
        masks = masks_from_boxes(args.boxes, paths, [image.shape[:2] for image in images])
    missing = sum(mask is None for mask in masks)
    empty = [path.name for path, mask in zip(paths, masks, strict=True)
             if mask is not None and not mask.any()]
    if missing == len(masks):
        raise FgOnnxError(f"no image has a mask in {args.masks or args.boxes} (masks are "
                          "matched by the image's file stem, boxes by its file name)")
    if missing:
        print(f"fg-onnx: note: {missing} of {len(masks)} image(s) have no mask: no "
              "localisation numbers for them", file=sys.stderr)
    if empty:
        print(f"fg-onnx: note: skipped the empty mask of {len(empty)} image(s) (e.g. "
              f"{empty[0]}) in the localisation numbers", file=sys.stderr)
    return masks
