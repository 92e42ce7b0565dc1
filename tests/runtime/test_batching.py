"""Chunking a batch into session runs: views for a dynamic batch, padded chunks for a fixed one."""

from __future__ import annotations

import numpy as np
import pytest

from fg_onnx.errors import FgOnnxError
from fg_onnx.runtime.batching import Batches, copy_chunks, fixed_batch


@pytest.mark.parametrize(("shape", "fixed"), [
    ([1, 3, 8, 8], 1), ([4, 8, 8, 3], 4), (["N", 3, 8, 8], None), ([None, 3], None),
    ([0, 3, 8, 8], None), ([], None),
])
def test_fixed_batch_reads_the_leading_dimension(shape: list[int | str | None],
                                                 fixed: int | None) -> None:
    assert fixed_batch(shape) == fixed


def test_a_dynamic_batch_runs_views_of_the_requested_size() -> None:
    batches = Batches.for_input(["N", 3, 2, 2], 4)
    assert batches == Batches(4, fixed=False)
    x = np.arange(10 * 12, dtype=np.float32).reshape(10, 3, 2, 2)
    seen: list[np.ndarray] = []

    def execute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(feeds["x"])
        return [feeds["x"].sum((1, 2, 3))]

    sums = [batches.run(execute, {"x": x[part]})[0] for part in batches.slices(len(x))]
    assert [len(s) for s in seen] == [4, 4, 2]
    assert all(np.shares_memory(s, x) for s in seen)  # no copies, no padding
    np.testing.assert_array_equal(np.concatenate(sums), x.sum((1, 2, 3)))


def test_a_fixed_batch_pads_the_last_chunk_with_its_last_row() -> None:
    batches = Batches.for_input([3, 2], 16)
    assert batches == Batches(3, fixed=True)
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    targets = np.arange(7, dtype=np.int64)
    fed: list[dict[str, np.ndarray]] = []

    def execute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        fed.append(feeds)
        assert all(len(v) == 3 for v in feeds.values())  # what the model accepts
        return [feeds["x"] * 2, feeds["t"] + 1, np.array([5.0])]  # the last has no batch axis

    outs = [batches.run(execute, {"x": x[part], "t": targets[part]})
            for part in batches.slices(len(x))]
    assert len(fed) == 3
    np.testing.assert_array_equal(fed[2]["x"], x[[6, 6, 6]])
    np.testing.assert_array_equal(fed[2]["t"], [6, 6, 6])
    np.testing.assert_array_equal(np.concatenate([o[0] for o in outs]), x * 2)
    np.testing.assert_array_equal(np.concatenate([o[1] for o in outs]), targets + 1)
    assert outs[2][2].tolist() == [5.0]


def test_the_requested_size_must_be_positive() -> None:
    with pytest.raises(FgOnnxError, match="batch size must be at least 1, got 0"):
        Batches.for_input([1, 3], 0)


@pytest.mark.parametrize(("images", "copies", "limit", "blocks"), [
    (5, 4, 10, [(slice(0, 2), slice(0, 4)), (slice(2, 4), slice(0, 4)),
                (slice(4, 5), slice(0, 4))]),
    (2, 5, 3, [(slice(0, 1), slice(0, 3)), (slice(0, 1), slice(3, 5)),
               (slice(1, 2), slice(0, 3)), (slice(1, 2), slice(3, 5))]),
])
def test_copy_chunks_bound_the_copies_per_block(images: int, copies: int, limit: int,
                                                blocks: list[tuple[slice, slice]]) -> None:
    assert list(copy_chunks(images, copies, limit)) == blocks
