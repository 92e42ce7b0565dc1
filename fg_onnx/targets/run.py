"""``TargetExplainer``: explain what a task names in each image (classes, boxes, regions,
characters, similarities) with one seed-input model: a clean forward pass picks the targets,
then every image runs once per target in one batch with the stacked seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fg_onnx.choices import spatial_axes
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.fullgrad.contract import is_augmented, read_facts
from fg_onnx.graph.load import ModelSource, load_model
from fg_onnx.runtime.providers import Device
from fg_onnx.runtime.session import FullGrad
from fg_onnx.targets.base import (
    ALPHABET_KEY,
    Box,
    Forward,
    Picked,
    TargetError,
    TargetRequest,
    Task,
    labels_of,
)
from fg_onnx.targets.classification import classification_targets, scalar_targets
from fg_onnx.targets.detection import detection_targets
from fg_onnx.targets.embedding import embedding_targets
from fg_onnx.targets.plan import plan
from fg_onnx.targets.segmentation import segmentation_targets
from fg_onnx.targets.sequence import sequence_targets


@dataclass(frozen=True)
class TargetResult:
    """One explained target of one image."""

    saliency: np.ndarray
    """[H, W] the map at the model input's size."""
    score: float
    """⟨seed, explained tensor⟩: the logit, region sum, similarity, ..."""
    completeness_error: float | None
    fields: dict[str, object]
    box: Box | None = None
    region: np.ndarray | None = None


@dataclass(frozen=True)
class ImageTargets:
    """An image's results; ``note`` says why there are none."""

    results: list[TargetResult]
    note: str | None = None


class TargetExplainer:
    """Explains targets of ``task`` (default: read from the output's shape and graph).

    ``model`` is the original (augmented in memory with ``seed_input``) or a model augmented
    with ``--seed-input``. For detection, where the class scores are a final Sigmoid's (or
    Softmax's, beside a boxes output) and ``options.output`` names nothing, the logits before
    it are explained. A CTC head's [T, N, C] output is read along its batch axis (found in
    the graph, else ``options.sequence_layout``).
    """

    def __init__(self, model: ModelSource, *, task: str = "auto", device: Device = "auto",
                 batch_size: int = 16, options: AugmentOptions | None = None,
                 threads: int | None = None) -> None:
        proto = load_model(model)
        options = dataclasses.replace(options or AugmentOptions(), seed_input=True)
        planned = plan(proto, task, options)
        self.task: Task = planned.task
        self.raw_output = planned.raw
        self.pair = planned.pair
        if planned.output is not None:
            options = dataclasses.replace(options, output=planned.output)
        self.session = FullGrad(proto, device=device, batch_size=batch_size, options=options,
                                threads=threads)
        self.metadata = self.session.metadata
        self.labels = labels_of(self.metadata)
        self.alphabet = labels_of(self.metadata, ALPHABET_KEY)
        self.explained = self.session.facts.scores

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """[N, ...] the explained tensor of ``batch`` (an embedder's embeddings)."""
        return self.session.forward(batch)[self.explained]

    def explain(self, batch: np.ndarray,
                request: TargetRequest | Sequence[TargetRequest] | None = None,
                ) -> list[ImageTargets]:
        """Every image's targets (one request for all, or one per image), explained
        together: one clean forward pass, then one run of every (image, target) pair."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        picked = self.pick(batch, request)
        owners = [i for i, p in enumerate(picked) for _ in p.targets]
        seeds = [t.seed for p in picked for t in p.targets]
        if not owners:
            return [ImageTargets([], p.note) for p in picked]
        run = self.session.explain_seeds(batch[owners], np.stack(seeds))
        results: list[ImageTargets] = []
        k = 0
        for p in picked:
            found = []
            for target in p.targets:
                error = run.completeness_error
                found.append(TargetResult(run.saliency[k], float(run.scores[k]),
                                          None if error is None else float(error[k]),
                                          target.fields, target.box, target.region))
                k += 1
            results.append(ImageTargets(found, p.note))
        return results

    def pick(self, batch: np.ndarray,
             request: TargetRequest | Sequence[TargetRequest] | None = None) -> list[Picked]:
        """Every image's targets from one clean forward pass, not explained (what a request
        picks, or the error it gets, before a run)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        requests = ([self._completed(request)] * len(batch)
                    if request is None or isinstance(request, TargetRequest)
                    else [self._completed(r) for r in request])
        if len(requests) != len(batch):
            raise TargetError(f"got {len(requests)} target requests for {len(batch)} images")
        outputs = self.session.forward(batch)
        size = tuple(int(batch.shape[a]) for a in spatial_axes(self.session.layout))
        return [self._pick(Forward(outputs[self.explained][i],
                                   {k: v[i] for k, v in outputs.items()},
                                   (size[0], size[1])), requests[i])
                for i in range(len(batch))]

    def _completed(self, request: TargetRequest | None) -> TargetRequest:
        """``request`` with the model's labels and alphabet where it gives none."""
        request = request or TargetRequest()
        if not request.labels and self.labels:
            request = dataclasses.replace(request, labels=self.labels)
        if not request.alphabet and self.alphabet:
            request = dataclasses.replace(request, alphabet=self.alphabet)
        return request

    def _pick(self, forward: Forward, request: TargetRequest) -> Picked:
        pickers: dict[str, Callable[[Forward, TargetRequest], Picked]] = {
            "classification": classification_targets, "scalar": scalar_targets,
            "sequence": sequence_targets, "embedding": embedding_targets,
            "segmentation": lambda f, r: segmentation_targets(
                f, r, f.outputs.get(self.raw_output)),
            "detection": lambda f, r: detection_targets(f, r, self.raw_output, self.pair),
        }
        return pickers[self.task](forward, request)


def plan_task(model: ModelSource, task: str = "auto", options: AugmentOptions | None = None,
              ) -> Task:
    """The task ``model``'s explained output is for (``task`` unless auto); a model augmented
    for classes (``fg_target``) is a classifier."""
    proto = load_model(model)
    if is_augmented(proto) and not read_facts(proto).seed_input:
        return "classification"
    return plan(proto, task, options or AugmentOptions()).task
