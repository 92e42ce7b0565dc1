"""Time-first CTC heads and SSD-style detectors on Ray (``explain_dataset(task=...,
request=...)``): the rows the local TargetExplainer gives, one per (image, target)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from target_models import exported_ssd, exported_time_first_ctc

from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.targets import TargetRequest
from fg_onnx.targets.run import TargetExplainer
from fg_onnx.vision.preprocess import Preprocess, preprocess_batch

ray = pytest.importorskip("ray")

from fg_onnx.ray import dataset_of, explain_dataset  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _same_rows(model: Path, task: str, request: TargetRequest, images: list[np.ndarray],
               spec: Preprocess, options: AugmentOptions | None = None) -> None:
    rows = sorted(explain_dataset(dataset_of(images), model, task=task, request=request,
                                  options=options, preprocess=spec, device="cpu",
                                  batch_size=2, threads=1).take_all(),
                  key=lambda r: (int(r["id"]), int(r["target_index"])))
    local = TargetExplainer(model, device="cpu", options=options)
    found = local.explain(preprocess_batch(images, spec), request)
    expected = [(i, k, r) for i, image in enumerate(found) for k, r in enumerate(image.results)]
    assert [(int(row["id"]), int(row["target_index"])) for row in rows] == [
        (i, k) for i, k, _ in expected] and expected
    for row, (_, _, result) in zip(rows, expected, strict=True):
        assert json.loads(str(row["fields"])) == result.fields and row["finite"]
        np.testing.assert_allclose(row["saliency"], result.saliency, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(row["score"], result.score, rtol=1e-6)
        assert float(row["completeness_error"]) < 1e-4


def test_ray_explains_time_first_characters_and_ssd_detections(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    lines = [rng.integers(0, 256, (8, 16, 3), dtype=np.uint8) for _ in range(3)]
    spec = Preprocess(size=(8, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    # The layout given (and checked against the graph) as Ray's augment options carry it.
    _same_rows(exported_time_first_ctc(tmp_path / "tnc.onnx"), "sequence",
               TargetRequest(alphabet=list("abcd")), lines, spec,
               AugmentOptions(sequence_layout="tnc"))
    scenes = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    _same_rows(exported_ssd(tmp_path / "ssd.onnx", softmax=True, normalised=True),
               "detection", TargetRequest(top_k=2, threshold=0.0), scenes,
               Preprocess(size=(32, 32)))
