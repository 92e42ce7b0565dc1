"""Embedding targets: the cosine (or dot) similarity to a reference embedding, another
image's through the same model."""

from __future__ import annotations

import numpy as np
import pytest
from target_models import Embedder, exported

from fg_onnx.targets import TargetError, TargetRequest
from fg_onnx.targets.run import TargetExplainer


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> TargetExplainer:
    path = exported(Embedder(), tmp_path_factory.mktemp("emb") / "emb.onnx")
    return TargetExplainer(path, task="embedding", device="cpu")


def test_cosine_and_dot_similarities_to_another_image(explainer: TargetExplainer) -> None:
    batch = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    first, second = explainer.embed(batch).astype(np.float64)
    cosine = first @ second / (np.linalg.norm(first) * np.linalg.norm(second))
    (r,) = explainer.explain(batch[:1], TargetRequest(reference=second))[0].results
    np.testing.assert_allclose(r.score, cosine, rtol=1e-5)
    assert r.completeness_error is not None and r.completeness_error < 1e-5
    request = TargetRequest(reference=second, similarity="dot")
    (r,) = explainer.explain(batch[:1], request)[0].results
    np.testing.assert_allclose(r.score, first @ second, rtol=1e-5)
    assert r.completeness_error is not None and r.completeness_error < 1e-5


def test_a_reference_of_the_wrong_length_is_one_line(explainer: TargetExplainer) -> None:
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(TargetError, match="the reference embedding has 5 values; the "
                                          "model's has 6"):
        explainer.explain(batch, TargetRequest(reference=np.ones(5)))
