"""Explain Ray Datasets of images on a Ray cluster (the optional extra ``fg-onnx[ray]``).

``explain_dataset`` maps batches of images through ``ExplainBatch`` actors, each holding one
onnxruntime session (``Explainer``). Ray restarts an actor that dies and retries its batch,
so no image is lost or explained twice. ``explain_files`` is the whole run of ``fg-onnx
explain --engine ray``: Ray started (or joined), image files explained and written, one row
per file back; ``explain_target_files`` is that run with task targets (``--top-k``,
``--box``, ...), its actors running the local run's own code per batch
(``fg_onnx.targets.outputs.explain_loaded``). ``ray`` is imported only when these are
used.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fg_onnx.errors import FgOnnxError, ImageError
from fg_onnx.files import FileOutputs, outputs_of, save_npy_atomic
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.graph.load import ModelSource
from fg_onnx.methods.explainer import Explainer
from fg_onnx.methods.params import MethodParams
from fg_onnx.runtime.providers import Device
from fg_onnx.targets.base import TargetRequest
from fg_onnx.targets.outputs import ImageRows, explain_loaded, finite_target
from fg_onnx.targets.run import TargetExplainer
from fg_onnx.vision.images import load_image
from fg_onnx.vision.overlay import (
    display_map,
    overlay_heatmap,
    resize_map,
    save_png,
    thumbnail_jpeg,
)
from fg_onnx.vision.preprocess import Preprocess, model_preprocess, preprocess_batch

if TYPE_CHECKING:
    import ray.data

__all__ = ["IMAGE_COLUMN", "PATH_COLUMN", "RESULT_COLUMNS", "TARGET_COLUMNS", "ExplainBatch",
           "ExplainTargetsBatch", "FileOutputs", "WriteTargetsBatch", "cluster_gpus",
           "dataset_of", "default_preprocess", "explain_dataset", "explain_files",
           "explain_target_files", "write_maps"]

PATH_COLUMN = "path"
IMAGE_COLUMN = "image"
RESULT_COLUMNS = ("saliency", "score", "target", "predicted", "completeness_error", "finite",
                  "error")
"""Columns ``explain_dataset`` adds; ``error`` is "" or why the image was skipped (its map
and score are then NaN). ``completeness_error`` is NaN for methods without one (Grad-CAM,
gradients, ...), and ``finite`` then covers the map and the score only."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FgOnnxError("the ray engine needs Ray: pip install 'fg-onnx[ray]'") from None
    return ray


def default_preprocess(explainer: Explainer) -> Preprocess:
    """The model's own preprocessing: its ``fg_onnx.preprocess`` preset (else imagenet) at
    its fixed input size."""
    return model_preprocess(explainer.session)


def _batch_images(batch: dict[str, np.ndarray]) -> list[np.ndarray | str]:
    """Each row's RGB uint8 image, or why it could not be loaded."""
    if IMAGE_COLUMN in batch:
        return [np.asarray(image) for image in batch[IMAGE_COLUMN]]
    if PATH_COLUMN not in batch:
        raise FgOnnxError(f"the dataset needs a {PATH_COLUMN!r} or {IMAGE_COLUMN!r} column")
    images: list[np.ndarray | str] = []
    # The drivers' rows also carry the path as the user gave it: their messages name that
    # one, as the local run's do, not the absolute path the workers read.
    given = batch.get("file", batch[PATH_COLUMN])
    for path, name in zip(batch[PATH_COLUMN], given, strict=True):
        try:
            images.append(load_image(str(path)))
        except ImageError as exc:
            images.append(str(exc).replace(str(path), str(name)))
    return images


class ExplainBatch:
    """The ``map_batches`` callable: one ``Explainer`` (one onnxruntime session) per actor."""

    def __init__(self, model: ModelSource, method: str, params: MethodParams | None,
                 options: AugmentOptions | None, device: Device, batch_size: int,
                 threads: int | None, preprocess: Preprocess | None,
                 target: int | None, files: FileOutputs | None) -> None:
        """Opens the session (once per actor)."""
        self.explainer = Explainer(model, method, params=params, device=device,
                                   batch_size=batch_size, options=options, threads=threads)
        self.spec = preprocess or default_preprocess(self.explainer)
        self.target = target
        self.files = files

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explains one batch of rows; every other input column but ``image`` passes through."""
        images = _batch_images(batch)
        n = len(images)
        height, width = self.spec.size
        saliency = np.full((n, height, width), np.nan, np.float32)
        score = np.full(n, np.nan, np.float32)
        target = np.full(n, -1, np.int64)
        predicted = np.full(n, -1, np.int64)
        error = np.full(n, np.nan, np.float32)
        has_error = False
        messages = [image if isinstance(image, str) else "" for image in images]
        good = [i for i, image in enumerate(images) if not isinstance(image, str)]
        if good:
            inputs = preprocess_batch([images[i] for i in good], self.spec)  # type: ignore[misc]
            result = self.explainer.explain(inputs, self.target)
            saliency[good] = result.saliency
            score[good] = result.scores
            target[good] = result.targets
            predicted[good] = result.predicted
            if result.completeness_error is not None:
                error[good] = result.completeness_error
                has_error = True
        finite = np.isfinite(score) & np.isfinite(saliency.reshape(n, -1)).all(1)
        if has_error:
            finite &= np.isfinite(error)
        if self.files is not None:
            stems = batch.get("stem")
            if stems is None:
                raise FgOnnxError("writing files needs a 'stem' column")
            thumbnails = np.full(n, b"", dtype=object)
            for i in good:
                self._write(str(stems[i]), images[i], saliency[i])  # type: ignore[arg-type]
                if self.files.thumbnails:
                    thumbnails[i] = thumbnail_jpeg(images[i])  # type: ignore[arg-type]
        out = {k: v for k, v in batch.items() if k != IMAGE_COLUMN}
        if self.files is not None:
            out["thumbnail"] = thumbnails
        out.update(saliency=saliency, score=score, target=target, predicted=predicted,
                   completeness_error=error, finite=finite,
                   error=np.asarray(messages, dtype=object))
        return out

    def _write(self, stem: str, image: np.ndarray, saliency: np.ndarray) -> None:
        files = self.files
        assert files is not None
        overlay, saliency_map = outputs_of(files.outdir, stem, files.method)
        if files.overlays:
            save_png(overlay, overlay_heatmap(image, display_map(saliency), alpha=files.alpha))
        if files.maps:
            save_npy_atomic(saliency_map, saliency if files.map_size == "model"
                            else resize_map(saliency, image.shape[:2]))


TARGET_COLUMNS = ("target_index", "saliency", "score", "completeness_error", "finite",
                  "fields", "note", "error")
"""Columns a targets run adds, one row per (image, target): ``fields`` is the target's row
fields as JSON (class, label, box in the model input's pixels, text, ...); an image without
a target has one row with its ``note``, an unreadable one a row with its ``error`` (their
maps and scores NaN)."""


class ExplainTargetsBatch:
    """The ``map_batches`` callable of a targets run: one ``TargetExplainer`` per actor."""

    def __init__(self, model: ModelSource, task: str, request: TargetRequest | None,
                 options: AugmentOptions | None, device: Device, batch_size: int,
                 threads: int | None, preprocess: Preprocess | None) -> None:
        """Opens the session (once per actor)."""
        self.explainer = TargetExplainer(model, task=task, device=device,
                                         batch_size=batch_size, options=options,
                                         threads=threads)
        self.spec = preprocess or model_preprocess(self.explainer.session)
        self.request = request

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One row per target of each input row; the input columns (but ``image``) repeat."""
        images = _batch_images(batch)
        good = [i for i, image in enumerate(images) if not isinstance(image, str)]
        found = self.explainer.explain(
            preprocess_batch([images[i] for i in good], self.spec),  # type: ignore[misc]
            self.request) if good else []
        by_row = dict(zip(good, found, strict=True))
        blank = np.full(self.spec.size, np.nan, np.float32)
        owners: list[int] = []
        columns: dict[str, list[Any]] = {name: [] for name in TARGET_COLUMNS}
        for i, image in enumerate(images):
            results = by_row[i].results if i in by_row else []
            note = by_row[i].note if i in by_row else None
            for k, result in enumerate(results or [None]):
                owners.append(i)
                error = None if result is None else result.completeness_error
                values = (k if result else -1, blank if result is None else result.saliency,
                          np.nan if result is None else result.score,
                          np.nan if error is None else error,
                          result is not None and finite_target(result),
                          json.dumps(result.fields if result else {}), note or "",
                          image if isinstance(image, str) else "")
                for name, value in zip(TARGET_COLUMNS, values, strict=True):
                    columns[name].append(value)
        out = {k: np.asarray(v)[owners] for k, v in batch.items() if k != IMAGE_COLUMN}
        out.update({name: _column(values) for name, values in columns.items()})
        return out


def _column(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], np.ndarray):
        return np.stack(values).astype(np.float32)
    return np.asarray(values, dtype=object if values and isinstance(values[0], str) else None)


class WriteTargetsBatch(ExplainTargetsBatch):
    """The ``map_batches`` callable of :func:`explain_target_files`: each image's targets
    explained and its files written as ``fg-onnx explain`` writes them (the local run's
    code); one row per input row, its summary rows as JSON. ``request`` has its box in the
    image's pixels, as ``--box``."""

    def __init__(self, model: ModelSource, task: str, request: TargetRequest | None,
                 options: AugmentOptions | None, device: Device, batch_size: int,
                 threads: int | None, preprocess: Preprocess | None,
                 files: FileOutputs) -> None:
        """Opens the session (once per actor)."""
        super().__init__(model, task, request, options, device, batch_size, threads,
                         preprocess)
        self.files = files

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adds ``rows``, ``messages`` (JSON), ``thumbnail``, ``skipped`` and ``failure``:
        "" or the one-line error of a target this batch cannot have (the driver raises it,
        as the local run would)."""
        images = _batch_images(batch)
        loaded = [(Path(str(source)), str(stem), image) for source, stem, image
                  in zip(batch["file"], batch["stem"], images, strict=True)]
        failure = ""
        try:
            written = explain_loaded(self.explainer, loaded, self.spec,
                                     self.request or TargetRequest(), self.files)
        except FgOnnxError as exc:
            failure, written = str(exc), [ImageRows([], b"", [])] * len(loaded)
        out = {k: v for k, v in batch.items() if k != IMAGE_COLUMN}
        out.update(rows=_objects([json.dumps(w.rows) for w in written]),
                   messages=_objects([json.dumps(w.messages) for w in written]),
                   thumbnail=_objects([w.thumbnail for w in written]),
                   skipped=np.asarray([w.skipped for w in written], dtype=bool),
                   failure=_objects([failure] * len(written)))
        return out


def _objects(values: Sequence[object]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def cluster_gpus() -> int:
    """GPUs of the connected Ray cluster."""
    return int(_ray().cluster_resources().get("GPU", 0))


def explain_dataset(dataset: ray.data.Dataset, model: ModelSource, *,
                    method: str = "fullgrad", params: MethodParams | None = None,
                    options: AugmentOptions | None = None,
                    preprocess: Preprocess | None = None, target: int | None = None,
                    device: Device = "auto", batch_size: int = 16, concurrency: int = 1,
                    num_gpus: float | None = None, threads: int | None = 1,
                    files: FileOutputs | None = None, max_restarts: int = 3,
                    max_task_retries: int = 3,
                    worker_class: type[ExplainBatch] = ExplainBatch,
                    task: str | None = None,
                    request: TargetRequest | None = None) -> ray.data.Dataset:
    """Saliency maps, scores and targets for a Ray Dataset of images.

    Args:
        dataset: rows with a ``path`` (an image file every worker can read) or an ``image``
            (RGB uint8 HxWx3) column; other columns (ids) pass through.
        model: ONNX model (a path every worker can read, or a ModelProto).
        method: saliency method (see ``fg_onnx.methods``).
        params: settings of the methods that combine several runs.
        options: augmentation options.
        preprocess: how images become inputs (default: the model's own, see
            ``default_preprocess``).
        target: class to explain (default: each image's predicted class).
        device: onnxruntime device of each actor.
        batch_size: rows per batch (and per onnxruntime run).
        concurrency: number of actors (one session each).
        num_gpus: GPUs per actor (default: 1 when the cluster has GPUs, else none).
        threads: onnxruntime intra-op threads and Ray CPUs per actor.
        files: per-image overlays/maps for the workers to write, or None.
        max_restarts: restarts of an actor that dies.
        max_task_retries: retries of a batch whose actor died.
        worker_class: ``ExplainBatch`` or a subclass.
        task: a targets run (``fg_onnx.targets``: ``auto``, ``detection``, ...) of
            ``request`` (default: the task's defaults); ``options.method`` is its map, and
            ``method``, ``params``, ``target``, ``files`` are not used.
        request: the targets to explain in each image; given alone, the task is auto.

    Returns:
        A lazy Dataset with the input columns (but ``image``) and ``RESULT_COLUMNS``; for a
        targets run, one row per target with ``TARGET_COLUMNS``.
    """
    constructor: dict[str, Any] = {
        "model": model, "method": method, "params": params, "options": options,
        "device": device, "batch_size": batch_size, "threads": threads,
        "preprocess": preprocess, "target": target, "files": files}
    worker: type[ExplainBatch | ExplainTargetsBatch] = worker_class
    if task is not None or request is not None:
        worker = ExplainTargetsBatch
        constructor = {"model": model, "task": task or "auto", "request": request,
                       "options": options, "device": device, "batch_size": batch_size,
                       "threads": threads, "preprocess": preprocess}
    return _map_batches(dataset, worker, constructor, batch_size=batch_size,
                        concurrency=concurrency, num_gpus=num_gpus, threads=threads,
                        max_restarts=max_restarts, max_task_retries=max_task_retries)


def _map_batches(dataset: ray.data.Dataset, worker: type[Any], constructor: dict[str, Any], *,
                 batch_size: int, concurrency: int, num_gpus: float | None,
                 threads: int | None, max_restarts: int = 3,
                 max_task_retries: int = 3) -> ray.data.Dataset:
    """``dataset`` through a pool of ``concurrency`` ``worker`` actors (``threads`` Ray CPUs
    each, and ``num_gpus``, default: 1 when the cluster has GPUs)."""
    if num_gpus is None:
        num_gpus = 1 if cluster_gpus() > 0 else 0
    remote: dict[str, Any] = {"num_cpus": threads or 1}
    if num_gpus:
        remote["num_gpus"] = num_gpus
    pool = _ray().data.ActorPoolStrategy(size=concurrency)
    mapped: ray.data.Dataset = dataset.map_batches(
        worker, fn_constructor_kwargs=constructor, batch_size=batch_size,
        batch_format="numpy", compute=pool, max_restarts=max_restarts,
        max_task_retries=max_task_retries, **remote)
    return mapped


def dataset_of(images: Sequence[str | os.PathLike[str]] | Sequence[np.ndarray],
               ) -> ray.data.Dataset:
    """A Dataset with an ``id`` column and a ``path`` or ``image`` column."""
    data = _ray().data
    if all(isinstance(image, np.ndarray) for image in images):
        rows = [{"id": i, IMAGE_COLUMN: image} for i, image in enumerate(images)]
    else:
        rows = [{"id": i, PATH_COLUMN: str(Path(image).resolve())}  # type: ignore[arg-type]
                for i, image in enumerate(images)]
    dataset: ray.data.Dataset = data.from_items(rows)
    return dataset


def write_maps(results: ray.data.Dataset, path: str | os.PathLike[str],
               fmt: Literal["parquet", "numpy"] = "parquet") -> None:
    """Writes the results: every column as Parquet, or the ``saliency`` column as .npy files."""
    if fmt == "parquet":
        results.write_parquet(str(path))
    elif fmt == "numpy":
        results.write_numpy(str(path), column="saliency")
    else:
        raise FgOnnxError(f"unknown format {fmt!r}: parquet or numpy")


def explain_files(images: Sequence[tuple[str | os.PathLike[str], str]], model: ModelSource,
                  files: FileOutputs, *, address: str | None = None, workers: int = 1,
                  method: str = "fullgrad", params: MethodParams | None = None,
                  options: AugmentOptions | None = None,
                  preprocess: Preprocess | None = None, target: int | None = None,
                  device: Device = "auto", batch_size: int = 16,
                  progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Explains image files on Ray and has the workers write their overlays and maps.

    Joins the Ray cluster at ``address`` (default: a local Ray, started and stopped here,
    unless one is already running in this process).

    Args:
        images: (path every worker can read, output stem) per image.
        model: as for :func:`explain_dataset`.
        files: where and what the workers write (``outdir`` on a shared file system).
        address: Ray cluster to join.
        workers: actors, one onnxruntime session each.
        progress: told how many more images are done as results arrive.

    Returns:
        One row per image, in ``images`` order: ``path``, ``stem``, every column of
        ``RESULT_COLUMNS`` but ``saliency``, and ``thumbnail`` (JPEG bytes; empty for a
        skipped image) where ``files.thumbnails``.
    """
    with _joined(address, workers) as joined:
        results = explain_dataset(
            _file_items(joined, images), _shared(model), method=method, params=params,
            options=options, preprocess=preprocess, target=target, device=device,
            batch_size=batch_size, concurrency=workers, files=files)
        return _collect(results.drop_columns(["saliency", "file"]), batch_size, progress)


def explain_target_files(images: Sequence[tuple[str | os.PathLike[str], str]],
                         model: ModelSource, files: FileOutputs, *, task: str = "auto",
                         request: TargetRequest | None = None, address: str | None = None,
                         workers: int = 1, options: AugmentOptions | None = None,
                         preprocess: Preprocess | None = None, device: Device = "auto",
                         batch_size: int = 16, progress: Callable[[int], None] | None = None,
                         ) -> list[ImageRows]:
    """The targets run of ``fg-onnx explain --engine ray``: each image's targets explained
    on Ray actors, which write the per-target overlays and maps, and summary rows back.

    Joins Ray as :func:`explain_files` does. The request is checked on the actors only:
    ``fg-onnx explain`` first checks it on one image in this process (a bad target is then
    one line before Ray starts).

    Args:
        images: (path every worker can read, output stem) per image; a row's ``file`` is
            the path as given.
        model: as for :func:`explain_dataset`.
        files: where and what the workers write (``outdir`` on a shared file system).
        task: as for :class:`fg_onnx.targets.run.TargetExplainer`.
        request: the targets of each image (default: the task's), with its box in each
            image's own pixels (``--box``), not the model input's.
        options: augmentation options (``options.method`` is the map).
        progress: told how many more images are done as results arrive.

    Returns:
        Per image, in ``images`` order: its summary rows as ``fg-onnx explain`` writes them,
        its thumbnail, the lines it has for stderr, and whether it was skipped.

    Raises:
        FgOnnxError: an error a batch got (a target an image cannot have), in one line.
    """
    with _joined(address, workers) as joined:
        constructor = {"model": _shared(model), "task": task, "request": request,
                       "options": options, "device": device, "batch_size": batch_size,
                       "threads": 1, "preprocess": preprocess, "files": files}
        results = _map_batches(_file_items(joined, images), WriteTargetsBatch, constructor,
                               batch_size=batch_size, concurrency=workers, num_gpus=None,
                               threads=1)
        rows = _collect(results, batch_size, progress)
    failure = next((str(row["failure"]) for row in rows if row["failure"]), None)
    if failure is not None:
        raise FgOnnxError(failure)
    return [ImageRows(json.loads(str(row["rows"])), bytes(row["thumbnail"]),
                      json.loads(str(row["messages"])), bool(row["skipped"])) for row in rows]


@contextlib.contextmanager
def _joined(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, joined at ``address`` (default: a local Ray, started and stopped here, unless
    one is already running in this process)."""
    if workers < 1:
        raise FgOnnxError(f"--workers must be at least 1, got {workers}")
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
    finally:
        if started:
            ray.shutdown()


def _file_items(joined: Any, images: Sequence[tuple[str | os.PathLike[str], str]],
                ) -> ray.data.Dataset:
    """One row per image: ``index``, ``path`` (absolute, for the workers), ``file`` (as
    given) and ``stem``."""
    items = [{"index": i, PATH_COLUMN: str(Path(path).resolve()), "file": str(path),
              "stem": stem} for i, (path, stem) in enumerate(images)]
    dataset: ray.data.Dataset = joined.data.from_items(items)
    return dataset


def _shared(model: ModelSource) -> ModelSource:
    """A model path as every worker reads it: absolute."""
    return str(Path(model).resolve()) if isinstance(model, str | os.PathLike) else model


def _collect(results: ray.data.Dataset, batch_size: int,
             progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
    """Every row of ``results``, in ``index`` order (dropped), telling ``progress``."""
    rows: list[dict[str, Any]] = []
    for batch in results.iter_batches(batch_size=batch_size, batch_format="numpy"):
        rows += _rows_of(batch)
        if progress is not None:
            progress(len(batch["index"]))
    rows.sort(key=lambda row: int(row["index"]))
    for row in rows:
        del row["index"]
    return rows


def _rows_of(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
