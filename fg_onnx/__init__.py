"""fg-onnx: FullGrad saliency for any exported ONNX model, on stock ONNX Runtime."""

from fg_onnx.api import augment, augment_with_report
from fg_onnx.errors import FgOnnxError
from fg_onnx.fullgrad.augment import AugmentOptions, AugmentResult

__version__ = "0.1.0"

__all__ = ["AugmentOptions", "AugmentResult", "FgOnnxError", "__version__", "augment",
           "augment_with_report"]
