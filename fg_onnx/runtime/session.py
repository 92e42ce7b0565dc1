"""``FullGrad``: explain batches of preprocessed images with an augmented model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

from fg_onnx.choices import GraphMethod, Layout, Precision, channel_axis, spatial_axes
from fg_onnx.errors import FgOnnxError, one_line
from fg_onnx.fullgrad import contract
from fg_onnx.fullgrad.augment import AugmentOptions, build_fullgrad
from fg_onnx.fullgrad.contract import completeness_error, is_augmented, read_facts
from fg_onnx.fullgrad.maps import graph_map
from fg_onnx.graph.load import ModelSource, load_model
from fg_onnx.graph.normalize import blaming_invalid_input
from fg_onnx.graph.save import is_large, save_model_atomic
from fg_onnx.runtime.batching import Batches
from fg_onnx.runtime.providers import (
    CUDA,
    Device,
    ProviderReport,
    open_session,
    planned_providers,
)

FETCHED = (contract.SALIENCY, contract.SCORE, contract.TARGET_USED, contract.INPUT_GRAD,
           contract.BIAS_TOTAL)


@dataclass
class Explanation:
    """FullGrad results for a batch of images."""

    saliency: np.ndarray
    """[N, H, W] FullGrad maps (the reference formula, not rescaled)."""
    scores: np.ndarray
    """[N] explained logits."""
    targets: np.ndarray
    """[N] explained classes."""
    predicted: np.ndarray
    """[N] arg-max classes of the explained output."""
    completeness_error: np.ndarray | None
    """[N] |Σ x·∇x + Σ bias·∇bias − score| / max(|score|, 1e-6)
    (fg_onnx.fullgrad.contract.completeness_error); None for a map that is not FullGrad's
    decomposition (fg_onnx.fullgrad.maps), which that check says nothing of."""

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class SeedExplanation:
    """Results of explaining one seed (a linear functional of the explained tensor) per
    input."""

    saliency: np.ndarray
    """[N, H, W] maps."""
    scores: np.ndarray
    """[N] ⟨seed, explained tensor⟩."""
    completeness_error: np.ndarray | None
    """[N] as :attr:`Explanation.completeness_error`."""


def _forward_model(proto: onnx.ModelProto, facts: contract.AugmentFacts) -> bytes:
    """The augmented model cut down to its forward part: the original outputs and the
    explained tensor, from the image input alone."""
    added = {contract.SCORE, contract.TARGET_USED, contract.INPUT_GRAD, contract.BIAS_TOTAL,
             contract.SALIENCY}
    names = [o.name for o in proto.graph.output
             if o.name not in added and not o.name.startswith(contract.TAP_PREFIX)]
    names += [] if facts.scores in names else [facts.scores]
    extracted = onnx.utils.Extractor(proto).extract_model([facts.input], names)
    return bytes(extracted.SerializeToString())


def _for_device(options: AugmentOptions | None, device: Device) -> AugmentOptions:
    """``options`` for a model augmented in memory: CPU-only ops when the session cannot
    run on CUDA (the same decision open_session makes)."""
    options = options or AugmentOptions()
    if CUDA in planned_providers(device)[0]:
        return options
    return replace(options, provider="cpu")


class FullGrad:
    """An onnxruntime session over the FullGrad model of ``model``.

    ``model`` may be the original (augmented in memory; no file is written) or an already
    augmented model. The session runs on CUDA when usable, else on CPU; ``provider`` says which.
    """

    def __init__(self, model: ModelSource, *, device: Device = "auto", batch_size: int = 16,
                 options: AugmentOptions | None = None, io_binding: bool | None = None,
                 threads: int | None = None) -> None:
        """Loads/augments the model and opens the session.

        ``io_binding`` (default: on CUDA only) feeds inputs as device OrtValues and binds the
        outputs, so that intermediate tensors never leave the device. ``options.method`` picks
        the map; an already augmented model must hold that map when ``options`` are given.
        ``threads`` caps onnxruntime's intra-op threads (default: all cores), e.g. for
        several sessions on one machine. A model whose input fixes the batch size runs that
        many images per run whatever ``batch_size`` (see ``fg_onnx.runtime.batching``).
        """
        if batch_size < 1:
            raise FgOnnxError(f"batch size must be at least 1, got {batch_size}")
        proto = load_model(model)
        augmented = is_augmented(proto)
        if not augmented:
            target = _for_device(options, device)
            proto = blaming_invalid_input(proto, lambda m: build_fullgrad(m, target).model)
        facts = read_facts(proto)
        self.facts = facts
        self.method: GraphMethod = facts.method
        self.precision: Precision = facts.precision
        if options is not None and options.method != self.method:
            raise FgOnnxError(f"the model was augmented for {self.method}, not "
                              f"{options.method}; pass the original model")
        if options is not None and options.precision == "float16" != self.precision:
            raise FgOnnxError("the model was augmented in float32, not float16; pass the "
                              "original model")
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        self.input_name: str = facts.input
        self.layout: Layout = facts.layout
        self.output_name: str = facts.output
        self.batch_size = batch_size
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        path = model if augmented and not isinstance(model, onnx.ModelProto) else None
        session_options = None
        if threads is not None:
            if threads < 1:
                raise FgOnnxError(f"threads must be at least 1, got {threads}")
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = threads
        self.session, self.provider = open_session(self._session_source(proto, path), device,
                                                   session_options)
        self.io_binding = self.provider.on_cuda if io_binding is None else io_binding
        self.input_shape = self._input_shape()
        self.batches = Batches.for_input(self.input_shape, batch_size)
        self._forward = (open_session(_forward_model(proto, facts), device, session_options)[0]
                         if facts.seed_input else None)
        self.forward_names = ([o.name for o in self._forward.get_outputs()]
                              if self._forward is not None else [])
        """What :meth:`forward` returns: the model's outputs and the explained tensor."""

    def _session_source(self, proto: onnx.ModelProto,
                        path: str | os.PathLike[str] | None) -> bytes | str:
        """Serialised bytes, or a path for models over 2 GB (protobuf cannot serialise them;
        onnxruntime reads their weights from external data)."""
        if not is_large(proto):
            return bytes(proto.SerializeToString())
        if path is not None:
            return str(path)
        # Kept until the session is gone: onnxruntime may map the data file.
        self._workdir = tempfile.TemporaryDirectory(prefix="fg_onnx_")
        written = Path(self._workdir.name) / "model.onnx"
        save_model_atomic(proto, written)
        # Saving moved the tensors out of ``proto``, which may be the caller's object.
        onnx.load_external_data_for_model(proto, self._workdir.name)
        return str(written)

    @property
    def provider_report(self) -> ProviderReport:
        """Which execution provider runs, and any fallback note."""
        return self.provider

    def _input_shape(self) -> list[int | str | None]:
        meta = next(i for i in self.session.get_inputs() if i.name == self.input_name)
        return list(meta.shape)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the model takes, when fixed."""
        shape = self.input_shape
        dims = [shape[axis] for axis in spatial_axes(self.layout)] if len(shape) == 4 else []
        if len(dims) == 2 and all(isinstance(d, int) for d in dims):
            return int(dims[0]), int(dims[1])  # type: ignore[arg-type]
        return None

    @property
    def classes(self) -> int | None:
        """Number of classes of the explained output, when fixed."""
        out = next(o for o in self.session.get_outputs() if o.name == self.output_name)
        dims = list(out.shape[1:]) if out.shape else []
        if not dims or not all(isinstance(d, int) for d in dims):
            return None
        return int(np.prod(dims))  # [N, C, 1, 1] from a final 1x1 convolution has C

    @property
    def channels(self) -> int | None:
        """Number of input channels, when fixed."""
        dim = self.input_shape[channel_axis(self.layout)]
        return dim if isinstance(dim, int) else None

    def explain(self, batch: np.ndarray, targets: int | Sequence[int] | None = None,
                ) -> Explanation:
        """Explains preprocessed inputs ``batch`` (any N, run in chunks of ``batch_size``, or
        of the model's fixed batch size).

        Args:
            batch: float array in the model's layout.
            targets: one class for all, one per image, or None for the predicted class.
        """
        if self.facts.seed_input:
            raise FgOnnxError("a model augmented with --seed-input explains seeds, not "
                              "classes: use explain_seeds (or fg_onnx.targets)")
        batch = self._checked_batch(batch)
        wanted = _targets(targets, len(batch))
        classes = self.classes
        if classes is not None and np.any(wanted >= classes):
            raise FgOnnxError(f"target class {int(wanted.max())} is out of range: the model "
                              f"has {classes} classes (0..{classes - 1})")
        parts = [self._run(batch[part], wanted[part])
                 for part in self.batches.slices(len(batch))]
        if not parts:
            empty = np.zeros((0,), np.float32)
            parts = [(np.zeros((0, 0, 0), np.float32), empty, empty.astype(np.int64),
                      empty.astype(np.int64), empty)]
        saliency, scores, used, predicted, error = (
            np.concatenate(column) for column in zip(*parts, strict=True))
        complete = graph_map(self.method).completeness
        return Explanation(saliency, scores, used, predicted, error if complete else None)

    def forward(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs and its explained tensor (``facts.scores``) for ``batch``, by
        name, without the gradient subgraph (a seed-input model only: seeds are built from
        these values)."""
        if self._forward is None:
            raise FgOnnxError("forward runs on models augmented with --seed-input")
        batch = self._checked_batch(batch)
        session, names = self._forward, self.forward_names
        axes = [self.facts.batch_axes.get(name, 0) for name in names]

        def execute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            # Batch first (a [T, N, C] head's too), for the chunks to pad and join.
            return [np.moveaxis(np.asarray(v), axis, 0)
                    for v, axis in zip(session.run(names, feeds), axes, strict=True)]

        try:
            parts = [self.batches.run(execute, {self.input_name: batch[part]})
                     for part in self.batches.slices(len(batch))]
        except Exception as exc:
            raise FgOnnxError(f"onnxruntime failed on a batch: {one_line(exc)}") from exc
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}

    def explain_seeds(self, batch: np.ndarray, seeds: np.ndarray) -> SeedExplanation:
        """Explains ⟨seed, explained tensor⟩ per input (a seed-input model): ``seeds`` is
        shaped like the explained tensor of ``batch`` with the batch first, one seed per row
        (as :meth:`forward` returns it; moved to the tensor's own batch axis to run)."""
        if not self.facts.seed_input:
            raise FgOnnxError("explain_seeds needs a model augmented with seed_input")
        batch = self._checked_batch(batch)
        seeds = np.ascontiguousarray(seeds, dtype=np.float32)
        if len(seeds) != len(batch):
            raise FgOnnxError(f"got {len(seeds)} seeds for {len(batch)} inputs")
        names = [contract.SALIENCY, contract.SCORE, contract.INPUT_GRAD, contract.BIAS_TOTAL]
        saliency, scores, errors = [], [], []
        for part in self.batches.slices(len(batch)):
            values = self._execute_checked(names, {self.input_name: batch[part],
                                                   contract.GRAD_OUTPUT: seeds[part]})
            saliency.append(values[0])
            scores.append(values[1])
            errors.append(completeness_error(values[2], batch[part], values[3], values[1]))
        if not saliency:
            return SeedExplanation(np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32),
                                   np.zeros(0, np.float32))
        complete = graph_map(self.method).completeness
        return SeedExplanation(np.concatenate(saliency), np.concatenate(scores),
                               np.concatenate(errors).astype(np.float32) if complete else None)

    def outputs(self, batch: np.ndarray, targets: np.ndarray,
                names: Sequence[str]) -> dict[str, np.ndarray]:
        """Raw outputs ``names`` of the augmented model (in chunks, as :meth:`explain` runs
        them), for methods that combine several runs; ``targets`` holds one class per input."""
        batch = self._checked_batch(batch)
        targets = np.asarray(targets, dtype=np.int64)
        parts = [self._execute_checked(list(names), {self.input_name: batch[part],
                                                     contract.TARGET: targets[part]})
                 for part in self.batches.slices(len(batch))]
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}

    def _checked_batch(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as contiguous float32, refused in one line when its shape is not one the
        model takes (onnxruntime's own error names neither the size nor the layout)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise FgOnnxError(f"expected a batch of shape [N, ...] of rank 4, got {batch.shape}")
        size, channels = self.image_size, self.channels
        got_size = tuple(int(batch.shape[axis]) for axis in spatial_axes(self.layout))
        if size is not None and got_size != size:
            raise FgOnnxError(
                f"the model takes {size[0]}x{size[1]} images ({self.layout.upper()}); the batch "
                f"has {got_size[0]}x{got_size[1]} (shape {list(batch.shape)})")
        got_channels = int(batch.shape[channel_axis(self.layout)])
        if channels is not None and got_channels != channels:
            raise FgOnnxError(
                f"the model takes {channels}-channel images ({self.layout.upper()}); the batch "
                f"has {got_channels} (shape {list(batch.shape)})")
        return batch

    def _execute_checked(self, names: list[str], feeds: dict[str, np.ndarray],
                         ) -> list[np.ndarray]:
        try:
            return self.batches.run(lambda chunk: self._execute(names, chunk), feeds)
        except Exception as exc:
            raise FgOnnxError(
                f"onnxruntime failed while explaining a batch: {one_line(exc)}") from exc

    def _run(self, x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
        names = [*FETCHED, self.output_name]
        feeds = {self.input_name: x, contract.TARGET: targets}
        values = dict(zip(names, self._execute_checked(names, feeds), strict=True))
        score = values[contract.SCORE]
        error = completeness_error(values[contract.INPUT_GRAD], x, values[contract.BIAS_TOTAL],
                                   score)
        scores_out = values[self.output_name].reshape(len(x), -1)
        return (values[contract.SALIENCY], score, values[contract.TARGET_USED],
                scores_out.argmax(1), error.astype(np.float32))

    def _execute(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = self._in_model_layout(feeds)
        if not self.io_binding:
            return [np.asarray(v) for v in self.session.run(names, feeds)]
        device = "cuda" if self.provider.on_cuda else "cpu"
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        for name in names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return [np.asarray(v) for v in binding.copy_outputs_to_cpu()]

    def _in_model_layout(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``feeds`` as the model takes them: a batch-first seed moved to the explained
        tensor's batch axis (after the chunk was padded along axis 0)."""
        axis = self.facts.batch_axes.get(self.facts.scores, 0)
        seed = feeds.get(contract.GRAD_OUTPUT)
        if not axis or seed is None:
            return feeds
        return {**feeds, contract.GRAD_OUTPUT: np.ascontiguousarray(np.moveaxis(seed, 0, axis))}


def _targets(targets: int | Sequence[int] | None, n: int) -> np.ndarray:
    if targets is None:
        return np.full(n, -1, dtype=np.int64)
    values = [int(targets)] * n if isinstance(targets, int | np.integer) else list(targets)
    try:
        array = np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise FgOnnxError(f"target classes must be below 2**63, got {max(values)}") from None
    if array.shape != (n,):
        raise FgOnnxError(f"got {len(array)} targets for {n} images")
    if np.any(array < -1):  # in fg_target only -1 means something: the predicted class
        raise FgOnnxError(f"target {int(array.min())} is not a class: use 0, 1, ... or -1 "
                          "for the predicted class")
    return array
