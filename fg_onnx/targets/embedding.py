"""Embedding targets: the similarity of an image's embedding e to a reference r.

``dot``: ⟨r, e⟩, linear in e. ``cosine``: ⟨r, e⟩ / (|r| |e|) with |e| held at its value at
the image: the seed r / (|r| |e|) gives the cosine itself as the score, and the map explains
how e's direction towards r decomposes (the cosine's own gradient is orthogonal to e, so its
linearisation at e is zero and decomposes nothing)."""

from __future__ import annotations

import numpy as np

from fg_onnx.targets.base import Forward, Picked, Target, TargetError, TargetRequest

SIMILARITIES = ("cosine", "dot")


def embedding_targets(forward: Forward, request: TargetRequest) -> Picked:
    """One target: the similarity to ``request.reference``."""
    embedding = forward.explained.astype(np.float64)
    if request.reference is None:
        raise TargetError("embedding targets need a reference: --reference IMAGE or a .npy "
                          "vector")
    reference = np.asarray(request.reference, np.float64).reshape(-1)
    if reference.size != embedding.size:
        raise TargetError(f"the reference embedding has {reference.size} values; the model's "
                          f"has {embedding.size}")
    if request.similarity not in SIMILARITIES:
        raise TargetError(f"similarity {request.similarity!r} is not one of "
                          f"{', '.join(SIMILARITIES)}")
    seed = reference
    if request.similarity == "cosine":
        norms = float(np.linalg.norm(reference) * np.linalg.norm(embedding))
        if norms == 0:
            raise TargetError("a zero embedding has no cosine similarity: use --similarity dot")
        seed = reference / norms
    return Picked([Target(seed.reshape(embedding.shape).astype(np.float32),
                          {"target": request.similarity})])
