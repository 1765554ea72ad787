"""Files written whole or not at all: the bottom floor every package may import (it imports none of them).

A temporary file beside the target is written, flushed to disk and renamed onto the target, so a reader never
sees half a file and a failure leaves the old one. The file gets the permissions a plain `open(path, "w")`
would give (0666 less the umask), not `mkstemp`'s owner-only 0600: a model copied into a container that runs
as another user, or a lab's shared `runs/`, stays readable.
"""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    try:  # Linux: read without changing it (os.umask can only be read by setting it)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` for the block to write (by any means: a library's exporter too); flushed
    to disk and moved onto `path` if the block succeeds, removed if it fails. Never a half-written `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` for the block to fill; it replaces `path` (and whatever was there) only
    if the block succeeds, and is removed if it fails: a failed run leaves no partial folder to block the next."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomically(path: str | Path, content: str | bytes | Callable[[BinaryIO], object]) -> None:
    """`content` (text as UTF-8, bytes, or a function that writes to the open file) to `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if callable(content):
            content(f)
        else:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
