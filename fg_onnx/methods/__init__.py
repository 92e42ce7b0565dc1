"""Gradient-based saliency methods on one augmented model (``fg-onnx explain --method``)."""

from fg_onnx.methods.explainer import Explainer
from fg_onnx.methods.params import MethodParams
from fg_onnx.methods.registry import METHOD_NAMES, METHODS, Method, get_method

__all__ = ["METHODS", "METHOD_NAMES", "Explainer", "Method", "MethodParams", "get_method"]
