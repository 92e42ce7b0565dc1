"""The ``fg-onnx`` command line."""
