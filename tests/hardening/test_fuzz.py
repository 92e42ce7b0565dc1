"""Fuzzing: mutated model bytes and random CLI arguments end in a correct result or in one
clean error line; never an escaping exception or an internal error (exit 3)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fg_onnx.cli.main import main
from hardening.support import IMAGES, PREFIXES, SAMPLE, tiny_cnn

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TINY = tiny_cnn().SerializeToString()
SAMPLE_BYTES = SAMPLE.read_bytes()
INFO = ("running on ", "[", "fg-onnx: skipped:", "fg-onnx: warning:")


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _assert_clean(code: int, err: str) -> None:
    assert code != 3 and "Traceback" not in err, err
    if code == 2:  # one error line; explain may have said which provider runs before it
        errors = [line for line in err.splitlines() if not line.startswith(INFO)]
        assert len(errors) == 1 and errors[0].startswith(PREFIXES[0]), err


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Mostly bit flips and byte changes (which often still parse), sometimes cuts."""
    data = bytearray(draw(st.sampled_from([TINY, SAMPLE_BYTES])))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "flip", "byte", "byte", "cut", "insert"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        if not data:
            break
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_models(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "m.onnx", Path(folder) / "o.onnx"
        source.write_bytes(data)
        code, err = _run(["augment", str(source), "-o", str(out)])
        _assert_clean(code, err)
        assert source.read_bytes() == data
        if code == 0:
            onnx.checker.check_model(str(out), full_check=True)
        else:
            assert code == 2 and not out.exists()


JUNK = ["", "0", "-1", "abc", "nan", "1e9", "0x5", "-5", "9" * 20]
VALID = {
    "--input": ["image"], "--output": ["logits"], "--layout": ["auto", "nchw", "nhwc"],
    "--input-size": ["64x64", "32", "8x8"], "--preset": ["imagenet", "zero-one", "raw"],
    "--size": ["64x64", "32x48", "100000x100000"], "--mean": ["0.5,0.5,0.5", "1,2"],
    "--std": ["0.2,0.2,0.2", "0,0,0"], "--target": ["0", "3", "4", "-1", "-7"],
    "--device": ["cpu", "auto"], "--batch-size": ["1", "2", "0", "-3"],
    "--alpha": ["0.3", "1", "-2", "7", "nan"],
}
SWITCHES = ["--implicit-biases", "--explain-probabilities", "--force", "--bogus", "-h"]


@st.composite
def arguments(draw: st.DrawFn, flags: list[str], switches: list[str]) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 3)):
            flag = draw(st.sampled_from(flags))
            values = VALID[flag] if draw(st.integers(0, 3)) else JUNK
            argv += [flag, draw(st.sampled_from(values))]
        else:
            argv.append(draw(st.sampled_from(switches)))
    return argv


AUGMENT_FLAGS = ["--input", "--output", "--layout", "--input-size"]
EXPLAIN_FLAGS = list(VALID)


@FUZZ
@given(arguments(AUGMENT_FLAGS, [*SWITCHES, "--seed-input", "--components"]))
def test_augment_arguments(extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "o.onnx"
        code, err = _run(["augment", str(SAMPLE), "-o", str(out), *extra])
        _assert_clean(code, err)
        if code == 0 and "-h" not in extra:
            onnx.checker.check_model(str(out), full_check=True)


@settings(FUZZ, max_examples=25)
@given(arguments(EXPLAIN_FLAGS, [*SWITCHES, "--bgr"]))
def test_explain_arguments(extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        code, err = _run(["explain", str(SAMPLE), str(IMAGES / "circle.png"), "-o", str(out),
                          *extra])
        _assert_clean(code, err)
        if code == 0 and "-h" not in extra:
            assert (out / "summary.json").exists()
