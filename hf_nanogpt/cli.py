"""What every script does with an expected failure: one clear line on stderr, no traceback.

    if __name__ == "__main__":
        run_script(main)

An expected failure is bad input the message already explains: `ValueError` (a recipe key out of range,
a malformed data file, named by file and line), `OSError` (a missing model folder or file),
`ImportError` (an optional extra that is not installed), or an exception class marked
`expected = True` (e.g. training's non-finite loss). It prints `<script>: error: <message>` and exits
with status 1. Anything else is a bug and keeps its traceback. `--debug` anywhere on the command line
(removed before the script parses its arguments) or `HF_NANOGPT_DEBUG=1` shows the traceback of
expected failures too. Ctrl-C exits with status 130 and one line.

`positive_int`, `nonnegative_int` and `port` are argparse types, so that `--workers 0` is refused
by the argument parser, before anything heavy is loaded.
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "HF_NANOGPT_DEBUG"
EXPECTED = (ValueError, OSError, ImportError)


def is_expected(err: BaseException) -> bool:
    """Whether `err` is a failure the user can fix from its message (see the module docstring)."""
    return isinstance(err, EXPECTED) or bool(getattr(type(err), "expected", False))


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def run_script(main: Callable[[], object], name: str | None = None) -> None:
    """Run a script's `main()` (which reads `sys.argv`), turning expected failures into one line."""
    name = name or Path(sys.argv[0]).name
    debug = debug_requested(sys.argv[1:])
    sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--debug")]
    try:
        main()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        if debug or not is_expected(err):
            raise
        message = str(err) or type(err).__name__
        print(f"{name}: error: {message}\n(the traceback: add --debug or set {DEBUG_ENV}=1)", file=sys.stderr)
        raise SystemExit(1) from None


def _bounded_int(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


positive_int = _bounded_int(1)
nonnegative_int = _bounded_int(0)
port = _bounded_int(0, 65535)

__all__ = ["DEBUG_ENV", "debug_requested", "is_expected", "nonnegative_int", "port", "positive_int", "run_script"]
