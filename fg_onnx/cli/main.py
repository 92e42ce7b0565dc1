"""Entry point: ``fg-onnx <command> ...``; user errors end in one line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from fg_onnx import __version__
from fg_onnx.cli import SUMMARIES, augment_cmd
from fg_onnx.errors import FgOnnxError, one_line
from fg_onnx.runtime.install import conflict_note, import_onnxruntime

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Prints ``fg-onnx: error: ...`` and exits with the user-error code."""
        text = " ".join(message.split())
        self.exit(EXIT_USER_ERROR, f"fg-onnx: error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command registered."""
    parser = _Parser(
        prog="fg-onnx",
        description="FullGrad saliency for any ONNX model, on stock ONNX Runtime.",
    )
    parser.add_argument("--version", action="version", version=f"fg-onnx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    augment_cmd.register(commands)
    _register_runtime_commands(commands)
    return parser


RUNTIME_COMMANDS = ("explain", "evaluate", "sanity")


def _register_runtime_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that run models: theirs where onnxruntime imports, else stand-ins that
    say in one line which package to install (augment needs no onnxruntime)."""
    try:
        from fg_onnx.cli import evaluate_cmd, explain_cmd, sanity_cmd
    except ImportError:
        try:
            import_onnxruntime()
        except FgOnnxError as exc:
            for name in RUNTIME_COMMANDS:
                _register_stand_in(commands, name, str(exc))
            return
        raise  # onnxruntime imports: a bug of ours, not the installation
    explain_cmd.register(commands)
    evaluate_cmd.register(commands)
    sanity_cmd.register(commands)


def _register_stand_in(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
                       name: str, message: str) -> None:
    # No option prefix: every argument (--help too) reaches run, which gives the message.
    parser = commands.add_parser(name, help=f"{SUMMARIES[name]} (needs onnxruntime)",
                                 description=message, add_help=False, prefix_chars="\0")
    parser.add_argument("arguments", nargs="*")

    def run(args: argparse.Namespace) -> int:
        raise FgOnnxError(message)

    parser.set_defaults(run=run, needs_runtime=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if args.needs_runtime:
        note = conflict_note()
        if note:
            print(f"fg-onnx: warning: {note}", file=sys.stderr)
    try:
        return int(args.run(args) or 0)
    except FgOnnxError as exc:
        print(f"fg-onnx: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fg-onnx: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("fg-onnx: error: out of memory", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug of ours: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"fg-onnx: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with "
              "--debug for details)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
