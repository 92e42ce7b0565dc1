"""CTC sequence targets: greedy decoding, one map per character in that character's
columns (the test recogniser's step t reads column t only)."""

from __future__ import annotations

import numpy as np
import pytest
from target_models import ColumnCTC, exported

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
