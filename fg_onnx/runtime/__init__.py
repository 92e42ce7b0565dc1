"""Running augmented models on onnxruntime: providers, IO binding, batching."""
