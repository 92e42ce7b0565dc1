"""Targets: what is explained in an image, for every task (classification, detection,
segmentation, CTC sequences, embeddings, scalars). A target is a seed, shaped like the
explained tensor, whose inner product with it is the explained score; a seed-input model
explains any of them (``fg_grad_output``), so completeness holds per target."""

from fg_onnx.targets.base import TASK_CHOICES, TASKS, Target, TargetError, TargetRequest

__all__ = ["TASKS", "TASK_CHOICES", "Target", "TargetError", "TargetRequest"]
