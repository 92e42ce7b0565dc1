"""Detection targets of YOLOv8-style, DETR-style and SSD-style outputs: the best detections
after threshold and NMS, or the one a box overlaps most; the score is the class logit before
the Sigmoid/Softmax, and a box's map lies in the box (the test detectors' box scores read
only their cell)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from target_models import CELL, BoxDetector, exported, exported_query_detector, exported_ssd

import fg_onnx
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.graph.save import save_model_atomic
from fg_onnx.targets import TargetError, TargetRequest
from fg_onnx.targets.base import Forward
from fg_onnx.targets.detection import (
    candidates,
    corners,
    detection_format,
    detection_targets,
    nms,
)
from fg_onnx.targets.run import TargetExplainer


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> TargetExplainer:
    path = exported(BoxDetector(), tmp_path_factory.mktemp("det") / "det.onnx")
    return TargetExplainer(path, device="cpu")


def _batch(n: int = 2) -> np.ndarray:
    return np.random.default_rng(2).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_the_best_detections_are_explained_by_their_logits_inside_their_boxes(
        explainer: TargetExplainer) -> None:
    assert explainer.task == "detection"
    assert explainer.explained != explainer.raw_output  # the Sigmoid's input: the logits
    batch = _batch()
    forward = explainer.session.forward(batch)
    found = explainer.explain(batch, TargetRequest(top_k=3, threshold=0.0))
    for image, result in enumerate(found):
        assert len(result.results) == 3
        confidences = [float(r.fields["confidence"]) for r in result.results]
        assert confidences == sorted(confidences, reverse=True)
        for r in result.results:
            anchor, cls = int(r.fields["anchor"]), int(r.fields["target"])
            logit = forward[explainer.explained][image, cls, anchor]
            np.testing.assert_allclose(r.score, logit, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(1 / (1 + np.exp(-logit)), r.fields["confidence"],
                                       atol=1e-5)
            assert r.completeness_error is not None and r.completeness_error < 1e-5
            x0, y0, x1, y1 = (round(v) for v in r.fields["box"])  # type: ignore[union-attr]
            assert (x1 - x0, y1 - y0) == (CELL, CELL)
            inside = np.zeros((32, 32), bool)
            inside[y0:y1, x0:x1] = True
            positive = np.clip(r.saliency, 0, None)
            assert positive[inside].sum() / positive.sum() > 0.999


def test_a_given_box_picks_the_detection_that_overlaps_it_most(
        explainer: TargetExplainer) -> None:
    (r,) = explainer.explain(_batch(1), TargetRequest(box=(17, 9, 23, 15), threshold=0.0),
                             )[0].results
    assert r.fields["box"] == [16.0, 8.0, 24.0, 16.0] and r.fields["anchor"] == 6
    assert 0 < float(r.fields["iou"]) <= 1  # type: ignore[arg-type]


def test_no_detection_above_the_threshold_is_a_note(explainer: TargetExplainer) -> None:
    (result,) = explainer.explain(_batch(1), TargetRequest(threshold=1.0))
    assert result.results == [] and result.note == "no detection above the threshold 1"


def test_nms_keeps_the_best_of_overlapping_boxes_of_one_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]],
                     float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, np.array([0, 0, 1, 0]), 0.5) == [0, 2, 3]


def test_yolov5_objectness_times_class_is_the_score_of_its_linearisation() -> None:
    raw = np.zeros((40, 7), np.float32)  # [A, 5 + 2]
    raw[:, :4] = [16, 16, 8, 8]
    raw[:, 4] = np.linspace(0.1, 0.9, 40)
    raw[:, 5] = 0.5
    raw[:, 6] = np.linspace(0.9, 0.1, 40)
    assert detection_format(raw.shape) == "yolov5"
    found = candidates(raw, "yolov5")
    np.testing.assert_allclose(found.probabilities[:, 1], raw[:, 4] * raw[:, 6], rtol=1e-6)
    picked = detection_targets(Forward(raw, {"out": raw}, (32, 32)),
                               TargetRequest(threshold=0.0), "out")
    (target,) = picked.targets
    anchor, cls = int(target.fields["anchor"]), int(target.fields["target"])
    np.testing.assert_allclose((target.seed * raw).sum(), raw[anchor, 4] * raw[anchor, 5 + cls],
                               rtol=1e-6)


def test_an_unrecognised_output_is_one_line() -> None:
    with pytest.raises(TargetError, match="cannot recognise a detection format in an output "
                                          "of shape \\[6, 6\\] per image: give "
                                          "--detection-format yolov8\\|yolov5"):
        detection_format((6, 6))



def _same_detections(here: TargetExplainer, there: TargetExplainer) -> None:
    batch = _batch(1)
    request = TargetRequest(top_k=2, threshold=0.0)
    mine, theirs = (e.explain(batch, request)[0].results for e in (here, there))
    assert [r.fields for r in theirs] == [r.fields for r in mine]
    np.testing.assert_allclose([r.score for r in theirs], [r.score for r in mine], rtol=1e-6)


def test_a_deployed_seed_input_model_explains_the_same_detections(
        tmp_path: Path, explainer: TargetExplainer) -> None:
    path = exported(BoxDetector(), tmp_path / "det.onnx")  # the fixture's weights (seed 0)
    options = AugmentOptions(seed_input=True, output=explainer.explained)
    save_model_atomic(fg_onnx.augment_with_report(path, options).model, tmp_path / "det.fg.onnx")
    deployed = TargetExplainer(tmp_path / "det.fg.onnx", device="cpu")
    assert deployed.task == "detection" and deployed.raw_output == "out"
    _same_detections(explainer, deployed)


def test_detr_queries_are_explained_by_their_class_logits_inside_their_boxes(
        tmp_path: Path) -> None:
    explainer = TargetExplainer(exported_query_detector(tmp_path / "detr.onnx"), device="cpu")
    assert explainer.task == "detection"
    batch = _batch(1)
    logits = explainer.session.forward(batch)["logits"][0].astype(np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    found = explainer.explain(batch, TargetRequest(top_k=2, threshold=0.0))[0].results
    assert len(found) == 2
    for r in found:
        query, cls = int(r.fields["anchor"]), int(r.fields["target"])
        np.testing.assert_allclose(r.score, logits[query, cls], rtol=1e-5)
        np.testing.assert_allclose(r.fields["confidence"], probabilities[query, cls],
                                   atol=1e-5)
        assert r.completeness_error is not None and r.completeness_error < 1e-5
        x0, y0, x1, y1 = (round(v) for v in r.fields["box"])  # type: ignore[union-attr]
        assert (x1 - x0, y1 - y0) == (CELL, CELL)
        positive = np.clip(r.saliency, 0, None)
        assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.999


# SSD-style: class scores beside a separate boxes output.

@pytest.fixture(scope="module", params=["sigmoid", "softmax"])
def ssd(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        ) -> tuple[str, TargetExplainer]:
    softmax = request.param == "softmax"
    # The softmax variant writes its boxes as fractions of the input (pytorch-ssd does).
    path = exported_ssd(tmp_path_factory.mktemp("ssd") / "ssd.onnx", softmax=softmax,
                        normalised=softmax)
    return request.param, TargetExplainer(path, device="cpu")


def test_ssd_detections_are_explained_by_their_logits_inside_their_boxes(
        ssd: tuple[str, TargetExplainer]) -> None:
    kind, explainer = ssd
    assert explainer.task == "detection" and explainer.raw_output == "scores"
    assert explainer.pair.format == "ssd" and explainer.pair.boxes == "boxes"
    assert explainer.explained != "scores"  # the logits before the Sigmoid/Softmax
    batch = _batch()
    forward = explainer.session.forward(batch)
    found = explainer.explain(batch, TargetRequest(top_k=3, threshold=0.0))
    for image, result in enumerate(found):
        assert len(result.results) == 3
        for r in result.results:
            anchor, cls = int(r.fields["anchor"]), int(r.fields["target"])
            logits = forward[explainer.explained][image, anchor].astype(np.float64)
            np.testing.assert_allclose(r.score, logits[cls], rtol=1e-5, atol=1e-6)
            if kind == "softmax":
                assert cls != 0  # the background is no detection
                probability = np.exp(logits[cls]) / np.exp(logits).sum()
            else:
                probability = 1 / (1 + np.exp(-logits[cls]))
            np.testing.assert_allclose(r.fields["confidence"], probability, atol=1e-5)
            assert r.completeness_error is not None and r.completeness_error < 1e-5
            x0, y0, x1, y1 = (round(v) for v in r.fields["box"])  # type: ignore[union-attr]
            assert (x1 - x0, y1 - y0) == (CELL, CELL)  # in pixels, whether or not normalised
            positive = np.clip(r.saliency, 0, None)
            assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.99


def test_an_ssd_box_picks_its_anchor_and_a_class_can_be_named(
        ssd: tuple[str, TargetExplainer]) -> None:
    explainer = ssd[1]
    request = TargetRequest(box=(17, 9, 23, 15), threshold=0.0, target=1)
    (r,) = explainer.explain(_batch(1), request)[0].results
    assert r.fields["box"] == [16.0, 8.0, 24.0, 16.0] and r.fields["anchor"] == 6
    assert r.fields["target"] == 1
    (none,) = explainer.explain(_batch(1), TargetRequest(threshold=1.0))
    assert none.results == [] and none.note == "no detection above the threshold 1"


def test_ssd_is_not_taken_for_detr_nor_detr_for_ssd(
        tmp_path: Path, ssd: tuple[str, TargetExplainer]) -> None:
    assert ssd[1].pair.format == "ssd"  # a Sigmoid/Softmax makes the scores
    detr = TargetExplainer(exported_query_detector(tmp_path / "detr.onnx"), device="cpu")
    assert detr.pair.format == "detr"  # raw logits beside the boxes


def test_box_orders_and_scales() -> None:
    size = (40, 80)  # H, W
    xyxy = np.array([[0.1, 0.2, 0.5, 0.6]])
    np.testing.assert_allclose(corners(xyxy, "xyxy", "auto", size), [[8, 8, 40, 24]])
    np.testing.assert_allclose(corners(xyxy[:, [1, 0, 3, 2]], "yxyx", "normalised", size),
                               [[8, 8, 40, 24]])
    np.testing.assert_allclose(corners(np.array([[0.3, 0.4, 0.4, 0.4]]), "cxcywh", "auto",
                                       size), [[8, 8, 40, 24]])
    np.testing.assert_allclose(corners(xyxy * 80, "xyxy", "auto", size), xyxy * 80)
    with pytest.raises(TargetError, match="unknown box format 'xywh'"):
        corners(xyxy, "xywh", "auto", size)


def test_a_given_box_order_is_used(tmp_path: Path) -> None:
    explainer = TargetExplainer(exported_ssd(tmp_path / "ssd.onnx"), device="cpu")
    request = TargetRequest(top_k=16, threshold=0.0, box_format="yxyx")
    boxes = {tuple(r.fields["box"]) for r in  # type: ignore[arg-type]
             explainer.explain(_batch(1), request)[0].results}
    truth = {tuple(r.fields["box"]) for r in  # type: ignore[arg-type]
             explainer.explain(_batch(1), TargetRequest(top_k=16, threshold=0.0))[0].results}
    assert boxes == {(y0, x0, y1, x1) for x0, y0, x1, y1 in truth}


def test_an_ssd_without_its_boxes_output_is_one_line(tmp_path: Path) -> None:
    path = exported(BoxDetector(), tmp_path / "det.onnx")
    explainer = TargetExplainer(path, device="cpu")
    with pytest.raises(TargetError, match=r"--detection-format ssd needs a \[N, 2, 4\] "
                       r"boxes output beside the \[N, 2, C\] class scores .*the outputs are "
                       r"out \[N, 6, 16\]"):
        explainer.explain(_batch(1), TargetRequest(detection_format="ssd"))


def test_a_deployed_seed_input_ssd_explains_the_same_detections(
        tmp_path: Path, ssd: tuple[str, TargetExplainer]) -> None:
    kind, explainer = ssd
    path = exported_ssd(tmp_path / "ssd.onnx", softmax=kind == "softmax",
                        normalised=kind == "softmax")  # the fixture's weights (seed 0)
    options = AugmentOptions(seed_input=True, output="scores")
    save_model_atomic(fg_onnx.augment_with_report(path, options).model, tmp_path / "d.onnx")
    deployed = TargetExplainer(tmp_path / "d.onnx", device="cpu")
    assert deployed.task == "detection" and deployed.pair == explainer.pair
    _same_detections(explainer, deployed)


def _explained_alike(here: TargetExplainer, there: TargetExplainer,
                     request: TargetRequest) -> list[dict[str, object]]:
    """The detections both explain (equal fields and scores) of one image."""
    mine, theirs = (e.explain(_batch(1), request)[0].results for e in (here, there))
    assert [r.fields for r in theirs] == [r.fields for r in mine]
    np.testing.assert_allclose([r.score for r in theirs], [r.score for r in mine], rtol=1e-6)
    return [r.fields for r in mine]


@pytest.mark.parametrize("detection_format", ["auto", "ssd"])
def test_naming_an_ssd_softmax_logits_reads_its_probabilities(
        tmp_path: Path, detection_format: str) -> None:
    path = exported_ssd(tmp_path / "ssd.onnx", softmax=True)
    softmax = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax")
    logits = softmax.input[0]
    plain = TargetExplainer(path, device="cpu")
    options = AugmentOptions(seed_input=True, output=logits)
    save_model_atomic(fg_onnx.augment_with_report(path, options).model, tmp_path / "d.onnx")
    request = TargetRequest(top_k=8, threshold=0.0, detection_format=detection_format)
    for named in (TargetExplainer(path, device="cpu", options=AugmentOptions(output=logits)),
                  TargetExplainer(tmp_path / "d.onnx", device="cpu")):  # deployed
        assert named.explained == plain.explained == logits
        assert named.raw_output == "scores" and named.pair == plain.pair
        assert named.pair.activation == "Softmax"
        found = _explained_alike(plain, named, request)
        assert len(found) == 8 and all(f["target"] != 0 for f in found)  # 0: background


def test_naming_a_yolov8_sigmoid_logits_explains_the_same_detections(
        tmp_path: Path, explainer: TargetExplainer) -> None:
    path = exported(BoxDetector(), tmp_path / "det.onnx")  # the fixture's weights (seed 0)
    named = TargetExplainer(path, device="cpu", options=AugmentOptions(output=explainer.explained))
    assert named.task == "detection" and named.raw_output == explainer.raw_output
    assert len(_explained_alike(explainer, named, TargetRequest(top_k=3, threshold=0.0))) == 3


def test_raw_logits_beside_plain_boxes_need_the_format_named(tmp_path: Path) -> None:
    path = exported_query_detector(tmp_path / "plain.onnx", box_sigmoid=False)
    explainer = TargetExplainer(path, device="cpu")
    assert explainer.task == "detection" and explainer.pair.format is None
    with pytest.raises(TargetError, match=r"raw class logits beside the boxes boxes .*could "
                       r"be SSD's or DETR's: give --detection-format yolov8\|yolov5\|detr\|ssd"):
        explainer.explain(_batch(1), TargetRequest(threshold=0.0))
    logits = explainer.session.forward(_batch(1))["logits"][0].astype(np.float64)
    for named in ("detr", "ssd"):
        request = TargetRequest(threshold=0.0, detection_format=named)
        (r,) = explainer.explain(_batch(1), request)[0].results
        query, cls = int(r.fields["anchor"]), int(r.fields["target"])
        np.testing.assert_allclose(r.score, logits[query, cls], rtol=1e-5)
        # DETR: the softmax without the no-object class; SSD: raw logits' sigmoid.
        expected = (np.exp(logits[query, cls]) / np.exp(logits[query]).sum()
                    if named == "detr" else 1 / (1 + np.exp(-logits[query, cls])))
        np.testing.assert_allclose(r.fields["confidence"], expected, atol=1e-5)
        assert named == "ssd" or cls < logits.shape[1] - 1
