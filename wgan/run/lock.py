"""One process per run folder: an exclusive ``flock`` on ``RUN_DIR/.lock``, held for the life of the
process that writes into the folder (training, resume, a sweep's member).

The lock is taken before anything else is written to the folder. The kernel drops a ``flock`` when
its process ends, however it ends (SIGKILL included), so a dead process's lock never blocks; the
file itself stays and only records who holds it (pid and host), for the refusal to name. Readers
(the report, the sampler) take no lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from wgan.errors import UserError

_ATTEMPTS = 20  # re-opens when the lock file was removed under us (a set-up that failed and cleaned up)


class RunLockError(UserError):
    """Another process holds the run folder; the message names it."""


class RunLock:
    """The held lock of one run folder; ``release()`` (or leaving the ``with`` block) drops it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self, remove: bool = False) -> None:
        """Drop the lock; ``remove`` first deletes the lock file (a folder being removed again)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the only descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def acquire(lock_file: Path, folder: Path) -> RunLock:
    """Lock ``lock_file`` (in ``folder``, which must exist) without waiting; RunLockError names the holder."""
    for _ in range(_ATTEMPTS):
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockError(f"{folder} is in use by {_holder(lock_file)} (one process per run folder)") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_file):
            _record_holder(fd)
            return RunLock(lock_file, fd)
        os.close(fd)  # we locked a file that its holder removed as we opened it: open the new one
    raise RunLockError(f"{folder}: could not take {lock_file.name} (it keeps being removed)")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _record_holder(fd: int) -> None:
    """pid and host, for another process's refusal (written after locking: only the holder writes)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def _holder(lock_file: Path) -> str:
    """'pid N on host H' from the lock file; the holder writes it just after locking, so wait a moment."""
    for _ in range(20):
        try:
            words = lock_file.read_text().split()
        except OSError:
            words = []
        if len(words) == 2 and words[0].isdigit():
            return f"pid {words[0]} on host {words[1]}"
        time.sleep(0.05)
    return "another process"
