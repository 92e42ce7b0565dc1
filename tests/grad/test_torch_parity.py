"""Gradients of torch-exported models on onnxruntime against torch autograd."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from helpers import onnxruntime_gradients, run_on_onnxruntime  # noqa: E402

from fg_onnx.errors import UnsupportedOpsError  # noqa: E402
from fg_onnx.fullgrad.augment import AugmentOptions, build_fullgrad  # noqa: E402
from fg_onnx.grad import GRAD_PREFIX, gradient_model  # noqa: E402

RELATIVE_TOL = 1e-4
BATCH = 2


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so folding them changes the graph."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU, overlapping MaxPool, a residual block, global pooling and a linear head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: Any) -> Any:
        h = self.stem(x)
        h = h + self.block(h)
        return self.head(torch.flatten(self.pool(h), 1))


class TinyViTBlock(nn.Module):
    """Patch embedding, pre-norm multi-head attention and GELU MLP with residuals, mean head."""

    def __init__(self, torch_attention: bool = False, dim: int = 16, heads: int = 4,
                 classes: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.torch_attention = torch_attention
        self.embed = nn.Linear(12, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Any) -> Any:
        tokens = self.embed(x)
        batch, count, dim = tokens.shape
        q, k, v = self.qkv(self.norm1(tokens)).chunk(3, dim=-1)

        def split(t: Any) -> Any:
            return t.reshape(batch, count, self.heads, dim // self.heads).transpose(1, 2)

        scores = split(q) @ split(k).transpose(-2, -1) / (dim // self.heads) ** 0.5
        mixed = (scores.softmax(dim=-1) @ split(v)).transpose(1, 2).reshape(batch, count, dim)
        tokens = tokens + self.proj(mixed)
        if self.torch_attention:  # a second attention through torch's own module
            normed = self.norm2(tokens)
            tokens = tokens + self.attn(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.head(tokens.mean(dim=1))


class MobileBlock(nn.Module):
    """Inverted residual: expand, depthwise conv, ReLU6, Hardswish, SiLU squeeze-excitation."""

    def __init__(self, channels: int = 8, classes: int = 5) -> None:
        super().__init__()
        wide = 2 * channels
        self.expand = nn.Sequential(nn.Conv2d(channels, wide, 1), nn.BatchNorm2d(wide),
                                    nn.ReLU6(inplace=True))
        self.depthwise = nn.Sequential(
            nn.Conv2d(wide, wide, 3, padding=1, groups=wide, bias=False), nn.BatchNorm2d(wide),
            nn.Hardswish(),
        )
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(wide, 4, 1), nn.SiLU(), nn.Conv2d(4, wide, 1),
            nn.Hardsigmoid(),
        )
        self.project = nn.Sequential(nn.Conv2d(wide, channels, 1), nn.BatchNorm2d(channels))
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: Any) -> Any:
        h = self.depthwise(self.expand(x))
        h = x + self.project(h * self.squeeze(h))
        h = torch.sigmoid(self.down(h)) * self.down(h)  # SiLU written out
        return self.head(h.mean(dim=(2, 3)))


class SpatialTransformer(nn.Module):
    """A localisation net predicts an affine transform of the input, which is resampled
    (AffineGrid + GridSample) and classified: the gradient flows through image and grid."""

    def __init__(self, padding_mode: str = "zeros", classes: int = 5) -> None:
        super().__init__()
        self.padding_mode = padding_mode
        self.locate = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.theta = nn.Linear(4, 6)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, classes)

    def forward(self, x: Any) -> Any:
        offset = self.theta(self.locate(x).mean(dim=(2, 3))) * 0.2
        theta = offset.view(-1, 2, 3) + torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        warped = nn.functional.grid_sample(x, grid, mode="bilinear",
                                           padding_mode=self.padding_mode, align_corners=False)
        return self.head(self.features(warped).mean(dim=(2, 3)))


class IndexedWrites(nn.Module):
    """CumSum, advanced indexing, torch.gather, an indexed assignment and scatter_add."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, classes)

    def forward(self, x: Any) -> Any:
        h = torch.cumsum(self.conv(x), dim=3) * 0.1
        h = h[:, :, torch.tensor([2, 0, 1])]
        columns = torch.tensor([3, 1, 0, 2]).expand(h.shape[0], h.shape[1], h.shape[2], 4)
        h = torch.gather(h, 3, columns)
        written = h.clone()
        written[:, 1] = h[:, 2] * 2.0
        channels = torch.tensor([0, 0, 1, 1, 2, 5]).view(1, 6, 1, 1).expand_as(written)
        written = written.scatter_add(1, channels, h)
        return self.head(torch.relu(written).mean(dim=(2, 3)))


class ShapeBranch(nn.Module):
    """A Python ``if`` on the input's height: torch.jit.script exports it as an If node."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # TorchScript reads the types
        h = self.conv(x)
        h = torch.tanh(h) * 2.0 if x.shape[2] > 4 else -h
        return self.head(h.mean(dim=(2, 3)))


def _build(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = factory()
    _randomise_norms(model)
    return model.eval()


def _export(model: nn.Module, x: Any, path: Path, **options: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"],
                          **options)
    return path


def _torch_gradient(model: nn.Module, x: Any, k: int) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    model(x)[:, k].sum().backward()
    return np.asarray(x.grad.detach().numpy())


def _onnx_gradient(path: Path, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the input gradient of logit ``k`` (every batch row seeded)."""
    seed = np.zeros((x.shape[0], 5), dtype=np.float32)
    seed[:, k] = 1.0
    outputs = onnxruntime_gradients(path, {"x": x}, seed, output="logits", wrt=["x"])
    assert next(iter(outputs)) == "logits"
    return outputs["logits"], outputs[GRAD_PREFIX + "x"]


def _assert_parity(model: nn.Module, x: Any, path: Path, k: int = 2) -> None:
    logits, grad = _onnx_gradient(path, x.numpy(), k)
    with torch.no_grad():
        expected_logits = model(x).numpy()
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-5)
    expected = _torch_gradient(model, x, k)
    assert grad.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 0.0
    error = float(np.abs(grad - expected).max()) / scale
    assert error < RELATIVE_TOL, f"relative gradient error {error:.3g}"


def _op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


TORCHSCRIPT = {"dynamo": False, "opset_version": 17}


@pytest.mark.parametrize(
    ("options", "batch_norm_kept"),
    [
        ({"do_constant_folding": True, "training": "EVAL"}, False),
        ({"do_constant_folding": False, "training": "PRESERVE"}, True),
    ],
    ids=["bn-folded", "bn-preserved"],
)
def test_small_cnn(tmp_path: Path, options: dict[str, Any], batch_norm_kept: bool) -> None:
    model = _build(SmallCNN)
    x = torch.randn(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mode = getattr(torch.onnx.TrainingMode, options.pop("training"))
    path = _export(model, x, tmp_path / "cnn.onnx", training=mode, **TORCHSCRIPT, **options)
    ops = _op_types(path)
    assert {"Conv", "MaxPool", "Relu", "Add", "Gemm"} <= ops
    assert ("BatchNormalization" in ops) == batch_norm_kept
    _assert_parity(model, x, path)


def test_tiny_vit_block(tmp_path: Path) -> None:
    model = _build(TinyViTBlock)
    x = torch.randn(BATCH, 6, 12, generator=torch.Generator().manual_seed(2))
    path = _export(model, x, tmp_path / "vit.onnx", **TORCHSCRIPT)
    assert {"LayerNormalization", "Softmax", "MatMul", "Erf"} <= _op_types(path)
    _assert_parity(model, x, path, k=4)


def test_tiny_vit_block_with_torch_attention(tmp_path: Path) -> None:
    model = _build(lambda: TinyViTBlock(torch_attention=True))
    x = torch.randn(BATCH, 6, 12, generator=torch.Generator().manual_seed(5))
    path = _export(model, x, tmp_path / "vit_mha.onnx", **TORCHSCRIPT)
    assert "Mod" in _op_types(path)
    _assert_parity(model, x, path, k=3)


def test_mobile_block(tmp_path: Path) -> None:
    model = _build(MobileBlock)
    x = torch.randn(BATCH, 8, 10, 10, generator=torch.Generator().manual_seed(3))
    path = _export(model, x, tmp_path / "mobile.onnx", **TORCHSCRIPT)
    assert {"Clip", "HardSwish", "HardSigmoid", "Sigmoid", "GlobalAveragePool"} <= _op_types(path)
    _assert_parity(model, x, path, k=0)


def _export_dynamo(model: nn.Module, x: Any, path: Path) -> Path:
    try:
        return _export(model, x, path, dynamo=True)
    except Exception as exc:  # the dynamo exporter depends on optional pieces
        pytest.skip(f"dynamo export unavailable here: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}")


def test_small_cnn_dynamo_export(tmp_path: Path) -> None:
    model = _build(SmallCNN)
    x = torch.randn(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    path = _export_dynamo(model, x, tmp_path / "cnn_dynamo.onnx")
    assert {"Conv", "MaxPool"} <= _op_types(path)
    _assert_parity(model, x, path, k=1)


def test_tiny_vit_block_with_torch_attention_dynamo_export(tmp_path: Path) -> None:
    model = _build(lambda: TinyViTBlock(torch_attention=True))
    x = torch.randn(BATCH, 6, 12, generator=torch.Generator().manual_seed(6))
    path = _export_dynamo(model, x, tmp_path / "vit_dynamo.onnx")
    assert {"LayerNormalization", "Softmax", "Split"} <= _op_types(path)
    _assert_parity(model, x, path, k=3)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_spatial_transformer(tmp_path: Path, padding_mode: str) -> None:
    model = _build(lambda: SpatialTransformer(padding_mode))
    x = torch.randn(BATCH, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    path = _export(model, x, tmp_path / "stn.onnx", dynamo=False, opset_version=20)
    assert {"AffineGrid", "GridSample"} <= _op_types(path)
    _assert_parity(model, x, path)


def test_indexed_writes(tmp_path: Path) -> None:
    model = _build(IndexedWrites)
    x = torch.randn(BATCH, 3, 6, 6, generator=torch.Generator().manual_seed(8))
    path = _export(model, x, tmp_path / "indexed.onnx", **TORCHSCRIPT)
    assert {"CumSum", "Gather", "GatherElements", "ScatterND", "ScatterElements"} <= (
        _op_types(path))
    _assert_parity(model, x, path, k=1)


@pytest.mark.parametrize(("factory", "shape", "fused"), [
    (SmallCNN, (BATCH, 3, 16, 16), {"FusedConv"}),
    (lambda: TinyViTBlock(torch_attention=True), (BATCH, 6, 12), {"FusedMatMul", "Gelu"}),
    (MobileBlock, (BATCH, 8, 10, 10), {"FusedConv", "QuickGelu"}),
], ids=["cnn", "vit", "mobile"])
def test_onnxruntime_optimised_export(tmp_path: Path, factory: Callable[[], nn.Module],
                                      shape: tuple[int, ...], fused: set[str]) -> None:
    """A model saved by onnxruntime at the extended optimisation level (com.microsoft fused
    ops) has torch's gradient once its fused ops are expanded."""
    model = _build(factory)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(9))
    exported = _export(model, x, tmp_path / "model.onnx", **TORCHSCRIPT)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(options.optimized_model_filepath)
    assert fused <= {n.op_type for n in optimised.graph.node if n.domain == "com.microsoft"}
    _assert_parity(model, x, Path(options.optimized_model_filepath))


def test_scripted_shape_branch_folds_once_the_input_size_is_fixed(tmp_path: Path) -> None:
    model = _build(ShapeBranch)
    x = torch.randn(BATCH, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    path = _export(torch.jit.script(model), x, tmp_path / "scripted.onnx", **TORCHSCRIPT,
                   dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    assert "If" in _op_types(path)
    with pytest.raises(UnsupportedOpsError, match="--input-size") as caught:
        gradient_model(path, output="logits", wrt=["x"])
    assert "\n" not in str(caught.value)
    augmented = build_fullgrad(path, AugmentOptions(input_size=(8, 8))).model
    out = run_on_onnxruntime(augmented, {"x": x.numpy(), "fg_target": np.array([2, 2])},
                             ["logits", "fg_input_grad"])
    logits, grad = out["logits"], out["fg_input_grad"]
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), rtol=1e-4, atol=1e-5)
    expected = _torch_gradient(model, x, 2)
    assert float(np.abs(grad - expected).max()) / float(np.abs(expected).max()) < RELATIVE_TOL
