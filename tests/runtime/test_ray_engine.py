"""The Ray engine on a local Ray of two worker processes: same results as one process, no
image lost or repeated when a worker dies."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_local import local_ray  # noqa: E402

from fg_onnx.cli.main import main  # noqa: E402
from fg_onnx.methods.explainer import Explainer  # noqa: E402
from fg_onnx.ray import ExplainBatch, dataset_of, explain_dataset, write_maps  # noqa: E402
from fg_onnx.vision.images import load_image  # noqa: E402
from fg_onnx.vision.preprocess import preprocess_batch  # noqa: E402

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_models" / "shapes_cnn.onnx"
IMAGES = sorted((ROOT / "sample_models" / "images").iterdir())


@pytest.fixture(scope="module", autouse=True)
def started_ray() -> Iterator[None]:
    # Workers unpickle the test's subclass by value: they cannot import this module.
    yield from local_ray(pickle_by_value=__name__)


def _local(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    explainer = Explainer(SAMPLE, device="cpu", threads=1)
    from fg_onnx.ray import default_preprocess

    batch = preprocess_batch([load_image(p) for p in paths], default_preprocess(explainer))
    result = explainer.explain(batch)
    return result.saliency, result.scores, result.targets


def _by_id(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(rows, key=lambda r: int(r["id"]))  # type: ignore[call-overload]


def test_paths_and_arrays_match_the_single_process_path(tmp_path: Path) -> None:
    paths = [*IMAGES, *IMAGES]  # 12 images: several batches over two actors
    saliency, scores, targets = _local(paths)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    results = explain_dataset(dataset_of([*paths, broken]), SAMPLE, device="cpu",
                              batch_size=3, concurrency=2)
    rows = _by_id(results.take_all())
    assert [r["id"] for r in rows] == list(range(len(paths) + 1))
    for i, row in enumerate(rows[:-1]):
        assert row["error"] == "" and row["finite"]
        np.testing.assert_array_equal(row["saliency"], saliency[i])
        assert row["score"] == scores[i] and row["target"] == targets[i]
    assert "broken.png" in str(rows[-1]["error"]) and not rows[-1]["finite"]
    assert np.isnan(rows[-1]["saliency"]).all()  # type: ignore[call-overload]

    arrays = explain_dataset(dataset_of([load_image(p) for p in IMAGES]), SAMPLE,
                             device="cpu", batch_size=4, concurrency=2)
    write_maps(arrays, tmp_path / "parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "parquet").to_pandas().sort_values("id")
    assert list(table["id"]) == list(range(len(IMAGES)))
    assert "image" not in table.columns
    np.testing.assert_array_equal(np.stack(list(table["saliency"])), saliency[:len(IMAGES)])


def test_a_ray_worker_explains_with_a_fixed_batch_model() -> None:
    """Ray hands an actor batch_size rows; a model fixed to one image runs them one by one."""
    import onnx
    from helpers import with_symbolic_dims

    fixed = with_symbolic_dims(onnx.load(str(SAMPLE)), {"image": [1, 3, 64, 64]})
    worker = ExplainBatch(fixed, "fullgrad", None, None, "cpu", 4, 1, None, None, None)
    out = worker({"id": np.arange(4), "path": np.asarray([str(p) for p in IMAGES[:4]])})
    saliency, scores, _ = _local(IMAGES[:4])
    assert out["finite"].all()
    np.testing.assert_allclose(out["saliency"], saliency, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["score"], scores, rtol=1e-5)


def test_a_ray_worker_feeds_a_grayscale_model_gray_images() -> None:
    """The worker's default preprocessing follows the model's one channel."""
    import onnx
    from helpers import grayscale_model

    gray = grayscale_model(onnx.load(str(SAMPLE)))
    worker = ExplainBatch(gray, "fullgrad", None, None, "cpu", 4, 1, None, None, None)
    assert worker.spec.channels == 1
    out = worker({"id": np.arange(2), "path": np.asarray([str(p) for p in IMAGES[:2]])})
    assert out["finite"].all() and out["saliency"].shape == (2, 64, 64)


class _DiesOnce(ExplainBatch):
    """Kills its own worker process on the first batch holding image 5 (once: a marker file)."""

    marker = ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        marker = Path(self.marker)
        if 5 in batch["id"] and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


def test_a_killed_worker_loses_and_repeats_no_image(tmp_path: Path) -> None:
    paths = [*IMAGES, *IMAGES]
    saliency, _, _ = _local(paths)
    marker = tmp_path / "died"
    _DiesOnce.marker = str(marker)  # pickled with the class
    results = explain_dataset(dataset_of(paths), SAMPLE, device="cpu", batch_size=2, concurrency=2,
                              worker_class=_DiesOnce)
    rows = _by_id(results.take_all())
    assert marker.exists()  # a worker did die mid-run
    assert [r["id"] for r in rows] == list(range(len(paths)))
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row["saliency"], saliency[i])


def test_cli_ray_engine_writes_what_the_local_engine_writes(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(IMAGES[0].parent, folder)
    shutil.copy(IMAGES[0], folder / "dotted.name.png")
    shutil.copy(IMAGES[1], folder / f"{IMAGES[0].stem}.bmp")
    common = [str(SAMPLE), str(folder), "--device", "cpu", "--batch-size", "4"]
    assert main(["explain", *common, "-o", str(tmp_path / "local")]) == 0
    assert main(["explain", *common, "-o", str(tmp_path / "ray"), "--engine", "ray",
                 "--workers", "2"]) == 0
    local = json.loads((tmp_path / "local" / "summary.json").read_text())
    distributed = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert distributed == local
    for row in local:
        np.testing.assert_array_equal(np.load(tmp_path / "ray" / str(row["map"])),
                                      np.load(tmp_path / "local" / str(row["map"])))
        assert (tmp_path / "ray" / str(row["overlay"])).read_bytes() == \
            (tmp_path / "local" / str(row["overlay"])).read_bytes()


def test_a_worker_leaves_nan_for_a_method_without_completeness(
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker = ExplainBatch(SAMPLE, "gradient", None, None, "cpu", 4, 1, None, None, None)
    explain = worker.explainer.explain
    monkeypatch.setattr(worker.explainer, "explain", lambda *args: dataclasses.replace(
        explain(*args), completeness_error=None))
    out = worker({"path": np.asarray([str(p) for p in IMAGES[:2]], dtype=object)})
    assert np.isnan(out["completeness_error"]).all() and out["finite"].all()


def test_ray_explains_targets_as_the_target_explainer_does(tmp_path: Path) -> None:
    from target_models import BoxDetector, exported

    from fg_onnx.targets import TargetRequest
    from fg_onnx.targets.run import TargetExplainer

    model = exported(BoxDetector(), tmp_path / "det.onnx")
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    request = TargetRequest(top_k=2, threshold=0.0)
    rows = _by_id(explain_dataset(dataset_of(images), model, task="detection",
                                  request=request, device="cpu", batch_size=2,
                                  concurrency=2, threads=1).take_all())
    local = TargetExplainer(model, device="cpu")
    from fg_onnx.vision.preprocess import model_preprocess

    found = local.explain(preprocess_batch(images, model_preprocess(local.session)), request)
    expected = [(i, r) for i, image in enumerate(found) for r in image.results]
    assert [(int(row["id"]), int(row["target_index"])) for row in rows] == [  # type: ignore[call-overload]
        (i, k) for i in range(3) for k in range(2)]
    for row, (_, result) in zip(rows, expected, strict=True):
        assert json.loads(str(row["fields"])) == result.fields and row["finite"]
        np.testing.assert_allclose(row["saliency"], result.saliency, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(row["score"], result.score, rtol=1e-6)
        assert float(row["completeness_error"]) < 1e-5  # type: ignore[arg-type]
