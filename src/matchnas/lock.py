"""One writer at a time: an exclusive lock on a run folder or an export destination.

Two jobs pointed at one folder would mix their files (one run's settings and metrics with the
other's checkpoints). Every command that writes into a run (train, resume, search) holds
``RUN/.matchnas.lock`` while it works; an export holds ``.BUNDLE.lock`` next to the bundle it
builds (the bundle folder itself is replaced by a rename). A second writer is refused at once
with one line naming the holder (pid, host, command, start time).

The lock is ``fcntl.flock`` on that file, so the kernel releases it when the holder dies,
however it dies: a lock file left by a killed process is stale by construction and the next
writer takes it over. The file's text (the holder) only serves the message. The holder unlinks
the file before it lets go; a writer that locked a file which was unlinked meanwhile tries again
on the new one. On a file system without ``flock`` the folder is used unlocked.

This module imports neither PyTorch nor NumPy.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from matchnas.errors import MatchnasError

LOCK_FILE = ".matchnas.lock"

_held: dict[str, FolderLock] = {}  # lock file (real path) -> the lock this process holds on it


class FolderLock:
    """Hold ``lock_file`` exclusively between :meth:`acquire` and :meth:`release` (or in a
    with-block), on behalf of ``folder`` (named in messages). Re-entrant within one process.

    ``create``: ``folder`` is made if missing (with its parents), and removed again on release
    if it then holds nothing (a refused run leaves nothing behind)."""

    def __init__(self, folder: str | Path, lock_file: str | Path, command: str, create: bool = False) -> None:
        self.folder, self.lock_file, self.command, self.create = Path(folder), Path(lock_file), command, create
        self._fd: int | None = None
        self._created: list[Path] = []
        self._depth = 0
        self._key = ""

    def acquire(self) -> FolderLock:
        if self.create:
            self._make_folder()
        key = os.path.realpath(self.lock_file)
        outer = _held.get(key)
        if outer is not None:  # this process holds it already (e.g. build calling train)
            outer._depth += 1
            self._key, self._fd = key, None
            return self
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self._remove_created()
                raise MatchnasError(f"{self.folder} is in use by another matchnas process ({holder}); "
                                    "wait for it to finish, or stop it, then run this again") from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                break  # a file system without flock: unlocked, as before locks existed
            if _same_file(fd, self.lock_file):
                break
            os.close(fd)  # the previous holder unlinked it between our open and our flock
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": f"matchnas {self.command}",
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd, self._key, self._depth = fd, key, 1
        _held[key] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            outer = _held.get(self._key)
            if outer is not None and self._key:
                outer._depth -= 1
            self._key = ""
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        _held.pop(self._key, None)
        try:
            if _same_file(fd, self.lock_file):  # unlinked while locked: nobody else holds this file
                self.lock_file.unlink(missing_ok=True)
            self._remove_created()
        finally:
            os.close(fd)

    def _make_folder(self) -> None:
        missing, folder = [], self.folder.absolute()
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        self.folder.mkdir(parents=True, exist_ok=True)
        self._created = missing  # innermost first

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break
        self._created = []

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_lock(run_dir: str | Path, command: str, create: bool = False) -> FolderLock:
    """The lock of a run folder (``RUN/.matchnas.lock``) for ``command`` (named to a second
    writer); ``create``: make the folder if missing."""
    return FolderLock(run_dir, Path(run_dir) / LOCK_FILE, command, create=create)


def destination_lock(path: str | Path, command: str) -> FolderLock:
    """The lock of a folder that is built elsewhere and renamed into place (``.NAME.lock`` next
    to it, after symlinks are followed)."""
    real = Path(os.path.realpath(path))
    return FolderLock(path, real.parent / f".{real.name}.lock", command)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {holder['pid']} on {holder['host']}, `{holder['command']}` since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder still starting"
