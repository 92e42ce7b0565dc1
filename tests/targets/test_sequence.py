"""CTC sequence targets: greedy decoding, one map per character in that character's
columns (the test recogniser's step t reads column t only), for [N, T, C] and time-first
[T, N, C] outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from target_models import ColumnCTC, exported, exported_time_first_ctc, seeded
from torch_models import export

import fg_onnx
from fg_onnx.errors import UnsupportedModelError
from fg_onnx.fullgrad.augment import AugmentOptions
from fg_onnx.fullgrad.contract import read_facts
from fg_onnx.graph.save import save_model_atomic
from fg_onnx.targets import TargetError, TargetRequest
from fg_onnx.targets.run import TargetExplainer
from fg_onnx.targets.sequence import greedy_decode


def test_greedy_decoding_merges_repeats_and_drops_blanks() -> None:
    best = [0, 1, 1, 0, 1, 2, 2, 0, 0]
    logits = np.eye(3)[best]
    assert greedy_decode(logits, blank=0) == [(1, 1, 2), (1, 4, 4), (2, 5, 6)]


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> TargetExplainer:
    path = exported(ColumnCTC(), tmp_path_factory.mktemp("ctc") / "ctc.onnx",
                    shape=(2, 3, 8, 24))
    return TargetExplainer(path, device="cpu")


def test_each_character_is_explained_in_its_columns(explainer: TargetExplainer) -> None:
    assert explainer.task == "sequence"
    batch = np.random.default_rng(3).standard_normal((2, 3, 8, 24)).astype(np.float32)
    logits = explainer.session.forward(batch)[explainer.explained]
    found = explainer.explain(batch, TargetRequest(alphabet=list("abcd")))
    for image, result in enumerate(found):
        runs = greedy_decode(logits[image], 0)
        text = "".join("abcd"[cls - 1] for cls, _, _ in runs)
        assert len(result.results) == len(runs) > 0
        for r, (cls, first, last) in zip(result.results, runs, strict=True):
            assert r.fields["text"] == text and r.fields["character"] == "abcd"[cls - 1]
            np.testing.assert_allclose(r.score, logits[image, first:last + 1, cls].sum(),
                                       rtol=1e-4, atol=1e-5)
            assert r.completeness_error is not None and r.completeness_error < 1e-4
            positive = np.clip(r.saliency, 0, None)
            assert positive[:, first:last + 1].sum() / positive.sum() > 0.999


def test_one_time_step_and_class_on_request(explainer: TargetExplainer) -> None:
    batch = np.random.default_rng(3).standard_normal((1, 3, 8, 24)).astype(np.float32)
    (r,) = explainer.explain(batch, TargetRequest(time_step=5, target=2))[0].results
    assert r.fields["steps"] == [5, 5] and r.fields["character"] == "[2]"
    with pytest.raises(TargetError, match="time step 24 is out of range"):
        explainer.explain(batch, TargetRequest(time_step=24))


# Time first: [T, N, C] (a CRNN with a seq-first LSTM), read along its batch axis 1.

WIDTHS = (16, 24)
"""Input widths of the time-first tests: 16 and 24 steps of one augmented model."""


@pytest.fixture(scope="module")
def time_first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TargetExplainer]:
    path = exported_time_first_ctc(tmp_path_factory.mktemp("tnc") / "tnc.onnx")
    return path, TargetExplainer(path, device="cpu")


def _reference(path: Path, batch: np.ndarray) -> np.ndarray:
    """[N, T, C] log-probabilities of the exported model, from onnxruntime's own run."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": batch})[0]).transpose(1, 0, 2)


@pytest.mark.parametrize("width", WIDTHS)
def test_time_first_characters_are_explained_in_their_columns(
        time_first: tuple[Path, TargetExplainer], width: int) -> None:
    path, explainer = time_first
    assert explainer.task == "sequence"
    assert explainer.session.facts.batch_axes == {"out": 1, explainer.explained: 1}
    batch = np.random.default_rng(3).standard_normal((2, 3, 8, width)).astype(np.float32)
    logits = explainer.session.forward(batch)[explainer.explained]  # batch first
    reference = _reference(path, batch)
    found = explainer.explain(batch, TargetRequest(alphabet=list("abcd")))
    for image, result in enumerate(found):
        runs = greedy_decode(reference[image], 0)
        text = "".join("abcd"[cls - 1] for cls, _, _ in runs)
        assert len(result.results) == len(runs) > 1
        for r, (cls, first, last) in zip(result.results, runs, strict=True):
            assert r.fields["text"] == text and r.fields["steps"] == [first, last]
            # The logits differ from the log-probabilities by a per-step constant.
            np.testing.assert_allclose(r.score, logits[image, first:last + 1, cls].sum(),
                                       rtol=1e-4, atol=1e-5)
            assert r.completeness_error is not None and r.completeness_error < 1e-4
            positive = np.clip(r.saliency, 0, None)
            assert r.saliency.shape == (8, width)
            assert positive[:, first:last + 1].sum() / positive.sum() > 0.999


def test_a_time_first_step_and_class_on_request(
        time_first: tuple[Path, TargetExplainer]) -> None:
    explainer = time_first[1]
    batch = np.random.default_rng(3).standard_normal((1, 3, 8, 16)).astype(np.float32)
    (r,) = explainer.explain(batch, TargetRequest(time_step=5, target=2))[0].results
    logits = explainer.session.forward(batch)[explainer.explained][0]
    np.testing.assert_allclose(r.score, logits[5, 2], rtol=1e-5)
    positive = np.clip(r.saliency, 0, None)
    assert positive[:, 5].sum() / positive.sum() > 0.999


def test_a_deployed_time_first_model_keeps_its_batch_axis(
        tmp_path: Path, time_first: tuple[Path, TargetExplainer]) -> None:
    path, explainer = time_first
    deployed = tmp_path / "tnc.fg.onnx"
    save_model_atomic(fg_onnx.augment_with_report(
        path, AugmentOptions(seed_input=True)).model, deployed)
    there = TargetExplainer(deployed, device="cpu")
    assert there.task == "sequence"
    batch = np.random.default_rng(4).standard_normal((3, 3, 8, 16)).astype(np.float32)
    here = explainer.explain(batch)
    for mine, theirs in zip(here, there.explain(batch), strict=True):
        assert [r.fields for r in theirs.results] == [r.fields for r in mine.results]
        np.testing.assert_allclose([r.score for r in theirs.results],
                                   [r.score for r in mine.results], rtol=1e-5)


def test_an_ntc_model_records_its_batch_axis_when_augmented(
        explainer: TargetExplainer) -> None:
    # Axis 0 recorded too: a deployed model tells a known [N, T, C] from an unknown layout.
    assert explainer.session.facts.batch_axes == {explainer.explained: 0}


def test_a_layout_the_deployed_model_contradicts_is_one_line(
        tmp_path: Path, time_first: tuple[Path, TargetExplainer]) -> None:
    deployed = tmp_path / "tnc.fg.onnx"
    save_model_atomic(fg_onnx.augment_with_report(
        time_first[0], AugmentOptions(seed_input=True)).model, deployed)
    with pytest.raises(UnsupportedModelError, match=r"--sequence-layout ntc contradicts the "
                       r"graph: .* has the input's batch at axis 1, so it is tnc"):
        TargetExplainer(deployed, device="cpu", options=AugmentOptions(sequence_layout="ntc"))
    there = TargetExplainer(deployed, device="cpu",
                            options=AugmentOptions(sequence_layout="tnc"))
    assert there.session.facts.batch_axes[there.explained] == 1


def test_a_layout_the_graph_contradicts_is_one_line(
        time_first: tuple[Path, TargetExplainer]) -> None:
    path, _ = time_first
    with pytest.raises(UnsupportedModelError, match=r"--sequence-layout ntc contradicts the "
                       r"graph: .* has the input's batch at axis 1, so it is tnc"):
        TargetExplainer(path, device="cpu", options=AugmentOptions(sequence_layout="ntc"))


def _ambiguous(path: Path) -> Path:
    """Batch 1 and one step: [1, 1, C] could be either, and the graph cannot say."""
    path = export(seeded(ColumnCTC(time_first=True), 2), path, (1, 3, 8, 1))
    onnx_model = onnx.load(str(path))
    for value in [*onnx_model.graph.input, *onnx_model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # the export's "N": fixed at 1
    onnx.save(onnx_model, str(path))
    return path


def test_an_ambiguous_layout_asks_for_it(tmp_path: Path) -> None:
    path = _ambiguous(tmp_path / "one.onnx")
    with pytest.raises(TargetError, match=r"cannot tell whether output .* \(\[1, 1, 5\]\) is "
                       r"\[N, T, C\] or \[T, N, C\]: give --sequence-layout ntc\|tnc"):
        TargetExplainer(path, device="cpu")
    explainer = TargetExplainer(path, device="cpu",
                                options=AugmentOptions(sequence_layout="tnc"))
    batch = np.random.default_rng(3).standard_normal((1, 3, 8, 1)).astype(np.float32)
    (result,) = explainer.explain(batch, TargetRequest(time_step=0))
    (r,) = result.results
    assert r.completeness_error is not None and r.completeness_error < 1e-4


def test_a_deployed_ambiguous_layout_asks_for_it_unless_augmented_with_it(
        tmp_path: Path) -> None:
    path = _ambiguous(tmp_path / "one.onnx")
    batch = np.random.default_rng(3).standard_normal((1, 3, 8, 1)).astype(np.float32)
    for layout, axis in (("auto", None), ("tnc", 1)):
        deployed = tmp_path / f"{layout}.fg.onnx"
        options = AugmentOptions(seed_input=True, sequence_layout=layout)
        save_model_atomic(fg_onnx.augment_with_report(path, options).model, deployed)
        facts = read_facts(onnx.load(str(deployed)))
        assert facts.batch_axes.get(facts.scores) == axis
    with pytest.raises(TargetError, match=r"cannot tell whether output .* \(\[1, 1, 5\]\) is "
                       r"\[N, T, C\] or \[T, N, C\]: give --sequence-layout ntc\|tnc"):
        TargetExplainer(tmp_path / "auto.fg.onnx", device="cpu")
    # Augmented without a layout, the graph reads the batch at axis 0: ntc, never tnc.
    with pytest.raises(TargetError, match=r"--sequence-layout tnc does not fit the augmented "
                       r"model: .* augment it again with --seed-input --sequence-layout tnc"):
        TargetExplainer(tmp_path / "auto.fg.onnx", device="cpu",
                        options=AugmentOptions(sequence_layout="tnc"))
    for deployed, layout in (("auto", "ntc"), ("tnc", "auto"), ("tnc", "tnc")):
        explainer = TargetExplainer(tmp_path / f"{deployed}.fg.onnx", device="cpu",
                                    options=AugmentOptions(sequence_layout=layout))
        (result,) = explainer.explain(batch, TargetRequest(time_step=0))
        (r,) = result.results
        assert r.completeness_error is not None and r.completeness_error < 1e-4
    with pytest.raises(UnsupportedModelError, match=r"--sequence-layout ntc contradicts the "
                       r"graph: .* has the input's batch at axis 1, so it is tnc"):
        TargetExplainer(tmp_path / "tnc.fg.onnx", device="cpu",
                        options=AugmentOptions(sequence_layout="ntc"))
