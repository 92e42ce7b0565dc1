"""The ``fg-onnx`` command line."""

SUMMARIES = {
    "augment": "write a model that also outputs FullGrad saliency maps",
    "explain": "write FullGrad heatmaps for images",
    "evaluate": "measure which saliency method is faithful (pixel perturbation, RISE) and, "
                "with masks, how well it localises",
    "sanity": "check that the maps change when the model's weights are randomised",
}
"""Each command's line in ``fg-onnx --help`` (also where onnxruntime is missing)."""
