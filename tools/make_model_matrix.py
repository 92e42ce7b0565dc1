"""The model matrix: real exports, augmented and checked against the framework's own autodiff.

Every model (deterministic random weights, no downloads) is exported — torchvision models
with the TorchScript exporter (``dynamo=False``, opset 17) and the dynamo exporter
(``tools/matrix_torch.py``), Keras models with tf2onnx (``tools/matrix_keras.py``) — and:

- ``fg_onnx.augment`` must succeed, with and without implicit biases;
- the augmented model's original output must equal onnxruntime's on the exported model;
- ``fg_input_grad`` must equal torch autograd's / TF GradientTape's input gradient
  (relative error < 1e-4, float32);
- completeness (score = Σ input·grad + bias total) must hold to 1e-4, without implicit
  biases for ReLU networks and with them for all.
- augmented with implicit biases and ``precision="float16"``, completeness must hold to 1e-3
  of the decomposition's size under float16 rounding (emulated on the CPU:
  tools/float16_emulation.py; see matrix_checks.float16_completeness_error), where float16
  is checked.

Classifiers are explained through ``fg_target``; detectors, segmenters and CRNNs through a
seed (a fixed random linear functional of the output, ``fg_grad_output``), augmented once
and checked at two input sizes (matrix_checks.check_seeded).

``python tools/make_model_matrix.py`` runs the fast tier (CI-sized models, one per family and
exporter) and writes ``docs/model_matrix.md``; ``--tier slow`` or ``all`` adds full-size
models. Frameworks that are not installed are skipped with a note. Exported files go to a
temporary folder unless ``--keep DIR``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

from matrix_checks import MatrixResult, ModelSpec, markdown_table, number

DOC = Path(__file__).resolve().parents[1] / "docs" / "model_matrix.md"
FRAMEWORKS = {"torch": "matrix_torch", "keras": "matrix_keras"}


def specs(module: types.ModuleType, tier: str) -> list[ModelSpec]:
    """A framework module's specs of ``tier`` ("fast", "slow" or "all")."""
    fast: list[ModelSpec] = module.FAST
    slow: list[ModelSpec] = module.SLOW
    return {"fast": fast, "slow": slow, "all": [*fast, *slow]}[tier]


NotExported = list[tuple[str, str, str]]
"""(model, exporter, why) of the models an exporter does not export."""


def run_framework(name: str, tier: str, only: Sequence[str] | None,
                  folder: Path) -> tuple[list[MatrixResult], str, NotExported]:
    """Results of one framework's models, its version string ("" when not installed) and
    what it does not export."""
    try:
        module = importlib.import_module(FRAMEWORKS[name])
    except ImportError as exc:
        print(f"skipping {name} models: {exc}", file=sys.stderr)
        return [], "", []
    run_one: Callable[[ModelSpec, str, Path], MatrixResult] = module.run_one
    results = []
    skipped: NotExported = []
    for spec in specs(module, tier):
        if only and spec.name not in only:
            continue
        skipped += [(spec.name, exporter, why) for exporter, why in spec.not_exported.items()]
        for exporter in spec.exporters(module.EXPORTERS):
            start = time.perf_counter()
            result = run_one(spec, exporter, folder)
            results.append(result)
            status = "ok" if result.passed else "FAIL " + "; ".join(result.failures)
            print(f"{spec.name:24s} {exporter:11s} grad {number(result.grad_error)} "
                  f"plain {number(result.completeness_plain)} implicit "
                  f"{number(result.completeness_implicit)} "
                  f"({time.perf_counter() - start:.1f} s) {status}", flush=True)
    return results, str(module.VERSIONS), skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns 1 when any model fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=["fast", "slow", "all"], default="fast")
    parser.add_argument("--framework", choices=[*FRAMEWORKS, "all"], default="all")
    parser.add_argument("--only", nargs="*", help="model names (default: the whole tier)")
    parser.add_argument("--doc", type=Path, default=DOC, help="table to write ('-': none)")
    parser.add_argument("--keep", type=Path, help="folder for the exported models")
    args = parser.parse_args(argv)
    names = list(FRAMEWORKS) if args.framework == "all" else [args.framework]
    results: list[MatrixResult] = []
    versions: list[str] = []
    not_exported: NotExported = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            found, version, skipped = run_framework(name, args.tier, args.only, folder)
            results += found
            not_exported += skipped
            versions += [version] if version else []
    if str(args.doc) != "-":
        command = "python tools/make_model_matrix.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != str(args.doc))
        page = markdown_table(results, command.strip(), ", ".join(versions), not_exported)
        args.doc.write_text(page, encoding="utf-8")
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
