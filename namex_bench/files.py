"""Writing files safely: atomically, with the umask's permissions, orphans cleaned, advisory locks.

    atomic_file(path)                    a file object whose bytes replace ``path`` at once when the block ends
    write_bytes_atomic(path, data)       the same for bytes in hand
    check_writable(folder)               fail now, not after an hour of compute
    remove_orphaned_temp_files(folder)   temporary files left by writes that were killed
    exclusive_lock(path, wait=...)       an advisory ``flock`` held for a block

A write goes to a temporary file ``.<name>.<random>.tmp`` in the target's folder, is
flushed and fsync'ed, given the permissions an ordinary ``open`` would have given it
(``0o666 & ~umask``: ``mkstemp`` alone makes it ``0600``, unreadable to colleagues
sharing a results folder), then renamed over the target (atomic on POSIX and Windows):
readers see the old file or the whole new one, never a part.

The writer holds an exclusive ``flock`` on its temporary file from creation to rename,
so :func:`remove_orphaned_temp_files` can tell a write in progress (locked: left
alone, even one by another process writing into the same folder) from the leftover of
a killed one (unlocked: removed). A writer whose fresh temporary file was removed in
the instant before it took the lock notices (the file has no link left) and starts over.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:  # POSIX advisory locks; elsewhere there are no locks and no orphan cleanup.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

TEMP_SUFFIX = ".tmp"


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only here)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~umask()


def _locked_temp_file(folder: Path, name: str) -> tuple[int, str]:
    """A new temporary file beside ``folder / name``, created and exclusively locked: ``(fd, path)``."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)  # removed as an orphan before we held the lock: take another


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file object whose contents replace ``path`` atomically once the block ends
    without an error (see the module docstring); on an error ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), default_file_mode())
            os.replace(tmp, path)  # still under the lock, released when the file closes
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` (and its parents) if needed and create and remove a file in it: an
    ``OSError`` here means nothing written there later would last (read-only, not a folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TEMP_SUFFIX, dir=folder)
    os.close(fd)
    os.unlink(probe)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    with atomic_file(path) as f:
        f.write(data)


def remove_orphaned_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.*.tmp``) directly in ``folder`` that no writer holds —
    the leftovers of writes that were killed. Returns the paths removed, sorted. Without
    ``flock`` (Windows) nothing is removed: a write in progress could not be told apart."""
    folder = Path(folder)
    if fcntl is None or not folder.is_dir():
        return []
    removed = []
    for tmp in sorted(folder.glob(f".*{TEMP_SUFFIX}")):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue  # renamed or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a write in progress
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path`` (created if missing, never removed) for the
    block. Yields ``True`` while it is held; with ``wait=False`` yields ``False`` at once when
    another process holds it. The lock dies with the process. Without ``flock``: always ``True``."""
    if fcntl is None:
        yield True
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
