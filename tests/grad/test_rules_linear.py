"""Adjoint tests of Gemm, MatMul and Einsum."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_runs_on_onnxruntime, assert_vjp, assert_vjp_symbolic, randn

from fg_onnx.errors import GraphBuildError
from fg_onnx.grad import gradient_model
from fg_onnx.grad.check import single_node_model

RNG = np.random.default_rng(4321)


def r(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


@pytest.mark.parametrize(
    ("inputs", "attrs"),
    [
        ([("a", r(3, 4)), ("b", r(5, 4)), ("w:c", r(5))],
         {"transB": 1, "alpha": 0.5, "beta": 2.0}),
        ([("a", r(4, 3)), ("b", r(4, 5)), ("c", r(1, 5))], {"transA": 1}),
        ([("a", r(4, 3)), ("b", r(5, 4))], {"transA": 1, "transB": 1}),
        ([("a", r(2, 3)), ("b", r(3, 4)), ("c", r(2, 4))], {"beta": 0.3}),
    ],
)
def test_gemm(inputs: list, attrs: dict) -> None:
    assert_vjp("Gemm", inputs, **attrs)


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((3, 4), (4, 5)),
        ((2, 3, 4), (2, 4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims, lower-rank right operand
        ((3, 4), (2, 4, 5)),  # 2-D left operand broadcast over a batch
        ((4,), (2, 4, 5)),  # 1-D left operand
        ((2, 3, 4), (4,)),  # 1-D right operand
        ((4,), (4,)),  # dot product
        ((4,), (4, 3)),
        ((1, 3, 4), (2, 1, 4, 5)),
    ],
)
def test_matmul(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    assert_vjp("MatMul", [("a", r(*a_shape)), ("b", r(*b_shape))])


def test_matmul_attention_scores_and_constant_weight() -> None:
    # Q·K^T where both come from the input, as in attention: both operands need gradients.
    assert_vjp("MatMul", [("q", r(2, 3, 5, 4)), ("kt", r(2, 3, 4, 6))])
    assert_vjp("MatMul", [("x", r(2, 5, 4)), ("w:W", r(4, 3))])


def test_matmul_symbolic_batch() -> None:
    assert_vjp_symbolic("MatMul", [("a", r(3, 2, 4)), ("b", r(3, 4, 5))],
                        {"a": ["N", 2, 4], "b": ["N", 4, 5]})
    assert_vjp_symbolic("MatMul", [("a", r(3, 2, 4)), ("b", r(1, 4, 5))],
                        {"a": ["N", 2, 4], "b": ["M", 4, 5]})


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("ij,jk->ik", [(3, 4), (4, 5)]),
        ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
        ("ij,jk", [(3, 4), (4, 5)]),  # implicit output
        ("ij->i", [(3, 4)]),  # summed-away index
        ("ij->", [(3, 4)]),
        ("i,i->", [(4,), (4,)]),
        ("i,j->ij", [(3,), (4,)]),
        ("ij,ij->ij", [(3, 4), (3, 4)]),
        ("ii->i", [(4, 4)]),  # diagonal
        ("ii", [(4, 4)]),  # trace (implicit)
        ("iij,jk->ik", [(3, 3, 2), (2, 4)]),
        ("bij->bji", [(2, 3, 4)]),
        ("...ij,...jk->...ik", [(2, 1, 3, 4), (1, 5, 4, 2)]),  # broadcast ellipsis
        ("i...j,j->i...", [(3, 2, 4), (4,)]),  # ellipsis in the middle
        ("ij,...j->...i", [(3, 4), (2, 5, 4)]),  # operand without ellipsis
        ("ijk,k", [(2, 3, 4), (4,)]),
        ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),  # bilinear
    ],
)
def test_einsum(equation: str, shapes: list[tuple[int, ...]]) -> None:
    inputs = [(f"x{i}", r(*s)) for i, s in enumerate(shapes)]
    assert_vjp("Einsum", inputs, equation=equation)


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [("...ij,...jk->...ik", [(2, 1, 3, 4), (1, 5, 4, 2)]), ("iij,jk->ik", [(3, 3, 2), (2, 4)]),
     ("ij->", [(3, 4)])],
)
def test_einsum_runs_on_onnxruntime(equation: str, shapes: list[tuple[int, ...]]) -> None:
    inputs = [(f"x{i}", r(*s)) for i, s in enumerate(shapes)]
    assert_runs_on_onnxruntime("Einsum", inputs, equation=equation)


def test_einsum_symbolic_dims() -> None:
    assert_vjp_symbolic("Einsum", [("a", r(3, 2, 4)), ("b", r(3, 4))],
                        {"a": ["N", 2, 4], "b": ["N", 4]}, equation="bij,bj->bi")
    assert_vjp_symbolic("Einsum", [("a", r(3, 3, 2))], {"a": ["N", "N", 2]},
                        equation="iij->ij")
    assert_vjp_symbolic("Einsum", [("a", r(2, 1, 3, 4)), ("b", r(1, 5, 4, 2))],
                        {"a": ["N", "M", 3, 4], "b": ["K", "L", 4, 2]},
                        equation="...ij,...jk->...ik")


def test_einsum_summed_ellipsis_is_refused() -> None:
    model, _ = single_node_model("Einsum", [("a", r(2, 3, 4))], equation="...ij->ij")
    with pytest.raises(GraphBuildError, match="ellipsis"):
        gradient_model(model)
