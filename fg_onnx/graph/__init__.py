"""Loading, normalising and inspecting ONNX graphs, and building new nodes into them."""
