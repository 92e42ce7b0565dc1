"""Which explanation is faithful: pixel perturbation and deletion tests (``fg-onnx evaluate``)."""

from fg_onnx.evaluation.perturbation import DEFAULT_KS, PerturbationConfig
from fg_onnx.evaluation.plot import plot
from fg_onnx.evaluation.report import markdown, to_json
from fg_onnx.evaluation.run import RANDOM, Evaluation, MethodResult, evaluate

__all__ = ["DEFAULT_KS", "RANDOM", "Evaluation", "MethodResult", "PerturbationConfig",
           "evaluate", "markdown", "plot", "to_json"]
