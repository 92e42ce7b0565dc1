"""Ops whose outputs carry no gradient: integer or boolean results, shapes, piecewise-constant
functions (Sign, Floor, Round, Hardmax: zero derivative almost everywhere) and random sources.

Most of these only ever produce non-float tensors, which the walk never differentiates; they are
declared so that coverage reports treat them as understood rather than missing.
"""

from __future__ import annotations

from fg_onnx.grad.registry import no_gradient

no_gradient(
    # Shapes, sizes, indices.
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "NonMaxSuppression",
    # Comparisons and logic.
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor",
    "IsNaN", "IsInf", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
    # Piecewise constant in their float input.
    "Sign", "Floor", "Ceil", "Round", "Hardmax",
    # Tensors built from shapes or constants, not from their float inputs' values.
    "Constant", "ConstantOfShape", "Range", "EyeLike", "OneHot",
    # Random sources.
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
    "Multinomial",
)
