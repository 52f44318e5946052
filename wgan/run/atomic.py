"""Atomic file writes: a run folder never holds a half-written checkpoint, config or image.

Every writer in the run folder goes through :func:`atomic_write`: the bytes go to a temporary
file in the same folder, are flushed and fsynced, then ``os.replace`` swaps the file in (atomic on
POSIX), and the folder is fsynced so the rename itself survives a crash. A failure removes the
temporary file and leaves the previous version untouched.

The temporary name is unpredictable and the file is created with ``O_EXCL | O_NOFOLLOW``: a file
or symlink planted at a guessed name is never opened, so a write can never be redirected elsewhere.
A disk-full or read-only error that a serialiser wraps in its own exception (``torch.save`` raises
RuntimeError "unexpected pos ...") comes out as the OSError it was, so callers can say what happened.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


class _RecordingFile:
    """A binary file that remembers the first OSError of a write, whatever the caller turns it into."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh, self.error = fh, None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:  # tell, seek, flush, fileno...: the file's own
        return getattr(self._fh, name)


def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """A new file next to ``path`` with a random name, never an existing file or symlink."""
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, _FLAGS, 0o666)  # the umask applies, as for open(..., "wb")
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")
    raise FileExistsError(f"no free temporary name next to {path}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, raw = _create_temporary(path)
    fh = _RecordingFile(raw)
    try:
        with raw:
            try:
                write(fh)  # type: ignore[arg-type]
            except Exception as exc:
                if fh.error is not None and fh.error is not exc:  # the disk's error, not a serialiser's wrapper
                    raise fh.error from None
                raise
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
