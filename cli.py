"""What every command shares: argument types that check their range, and one error boundary.

Every error a user can cause derives from `InputError`: a bad flag or option value is a `UsageError` (exit 2,
as argparse's own errors), a file, image or model that cannot be used is another `InputError` (exit 1). `run`
is the boundary each command's `main` runs inside: it turns those, an `OSError` (a full disk, a missing file,
a closed pipe) and Ctrl-C into one line on stderr and a documented exit status, never a traceback:

    0    done
    1    an input that cannot be used, or the system refused (disk full, permission, file-size limit)
    2    a usage error: a flag, an option value, a --config file
    130  interrupted (Ctrl-C)
    141  standard output closed by its reader (`| head`): quietly, as a program killed by SIGPIPE

This is the bottom floor: it imports nothing of the project.
"""

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable


class InputError(Exception):
    """An input the user gave that cannot be used: reported as one line naming it (exit 1)."""

    exit_code = 1


class UsageError(InputError, ValueError):
    """An invalid flag, option value or option file, reported before any work (exit 2)."""

    exit_code = 2


def _number(text: str, kind: Callable[[str], float], rule: str, ok: Callable[[float], bool]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return int(_number(text, int, "a whole number >= 1", lambda v: v >= 1))


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return int(_number(text, int, "a whole number >= 0", lambda v: v >= 0))


def port(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    return int(_number(text, int, "a port number in 1-65535", lambda v: 1 <= v <= 65535))


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def describe_os_error(error: OSError) -> str:
    """`No space left on device (runs/x/last.pt)`: the system's reason and the file, without errno noise."""
    reason = error.strerror or str(error)
    names = [n for n in (error.filename, error.filename2) if n is not None]
    return reason + (f" ({' -> '.join(map(str, names))})" if names else "")


def run(name: str, main: Callable[[], object], *, interrupted: str = "interrupted", os_note: str = "") -> None:
    """Run a command's `main` inside the one error boundary (module docstring) and exit: with `main`'s return
    value when it is an int, else 0. `interrupted` is the Ctrl-C line, `os_note` ends the line of a system
    error (what the command's own files are left as)."""
    try:
        status = main()
        sys.stdout.flush()  # a closed or full standard output is reported here, not at interpreter exit
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(141)
    except InputError as e:
        _exit(f"{name}: error: {_one_line(str(e))}", e.exit_code)
    except KeyboardInterrupt:
        _exit(f"{name}: {interrupted}", 130)
    except OSError as e:
        if e.errno == errno.EPIPE:
            _quiet_stdout()
            sys.exit(141)
        _exit(f"{name}: error: {_one_line(describe_os_error(e))}{os_note}", 1)
    sys.exit(status if isinstance(status, int) else 0)


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _exit(message: str, status: int) -> None:
    try:
        print(message, file=sys.stderr)
    finally:
        _quiet_stdout()
        sys.exit(status)


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's final flush of a closed or full pipe adds
    no second message."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
