"""Files in and out, with one-line errors.

Writes are atomic: a temp file in the same folder, then ``os.replace``, so a reader (or a resumed
run) never sees a half-written file. Temp names carry the writer's process id
(``.NAME.PID.XXXXXXXX.tmp``, ``.NAME.PID.XXXXXXXX.partial``), so a later run can tell the leftovers
of a killed writer from the work of a live one (:func:`remove_leftovers`). Written files and
folders get the permissions an ordinary write would (0666 / 0777 less the umask), not
``tempfile``'s private 0600 / 0700.

Reads name the file and what is wrong with it (missing, a folder, binary, not valid JSON/YAML).
All JSON the project writes is strict (RFC 8259): a non-finite float becomes ``null``.

This module imports neither PyTorch nor NumPy: ``matchnas predict`` uses it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from matchnas.errors import MatchnasError

# .NAME.PID.XXXXXXXX.tmp (PID absent in temps from versions before it was added)
_LEFTOVER = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.(?:tmp|partial|old)$")


def umask() -> int:
    """The process umask (there is no way to read it without setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, then move ``tmp_path`` over ``path`` (mode 0666 less the umask).
    A full disk is one line naming ``path``, the space it needs and the space free; whatever the
    failure, ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        if err.errno in _NO_SPACE:
            raise MatchnasError(no_space(path, 0)) from None
        raise
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        full = disk_full(err, path.parent)  # before the temp goes and frees its space
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise MatchnasError(no_space(path, written)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(err: BaseException, folder: Path) -> bool:
    """``err`` is a write that failed for want of space: errno 28/122, or a library's wrapped
    write error on a device that is now full (PyTorch's checkpoint writer raises RuntimeError
    "[enforce fail at inline_container.cc:...] unexpected pos ..." or "... file write failed")."""
    if isinstance(err, OSError):
        return err.errno in _NO_SPACE
    try:
        return shutil.disk_usage(folder).free < 1 << 20  # under 1 MiB left: the write ran out of room
    except OSError:
        return False


def tree_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (what a partial export had written)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def no_space(path: Path, written: int) -> str:
    """The one line for a write to ``path`` that found its device full after ``written`` bytes:
    the space it needs (at least what was written, or the size of the version it replaces) and
    the space free."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    previous = path.stat().st_size if path.is_file() else 0
    needs = f"more than {_mib(written)}" if written >= previous else f"about {_mib(previous)}"
    kept = "its previous version is kept" if previous else "nothing was written"
    return (f"no space left on the device of {path}: writing it needs {needs}, {_mib(free)} free; {kept}: "
            "free some space and run the command again")


def environment_error(err: OSError) -> str | None:
    """A one-line message for an error of the machine rather than of matchnas (another user's
    file or folder, a full disk) met wherever a library read or wrote; None for any other."""
    where = err.filename or "a file"
    if isinstance(err, PermissionError):
        return f"{where}: permission denied (another user's, or read-only)"
    if err.errno in _NO_SPACE:
        return f"{where}: no space left on its device ({err.strerror}); free some space and run the command again"
    return None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def work_dir(target: Path) -> Path:
    """A hidden folder next to ``target`` to build it in (mode 0777 less the umask), to be renamed
    into place when complete."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent))
    os.chmod(work, 0o777 & ~umask())
    return work


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_leftovers(folder: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temp files and folders that killed writers left in ``folder`` (those of
    ``names`` only, or every matchnas temp); a live process's temps stay. Returns what went."""
    folder, wanted = Path(folder), set(names) if names is not None else None
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _LEFTOVER.match(entry.name)
        if not match or (wanted is not None and match["name"] not in wanted):
            continue
        if match["pid"] is not None and _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def as_path(value: str | Path, what: str) -> Path:
    """``value`` as a path; an empty string is refused (``Path("")`` is the current folder, so a
    run given ``--out ''`` would be written among whatever is there)."""
    if str(value).strip() == "":
        raise MatchnasError(f"{what} is empty: name a folder or file")
    return Path(value)


def _check_names(path: Path, what: str) -> None:
    """Refuse a path the file system cannot hold: a name over ``NAME_MAX`` bytes (255 on most),
    a whole path over ``PATH_MAX`` (4096 on Linux). Checked before anything looks the path up:
    the system refuses even to say whether such a path exists."""
    try:
        name_max, path_max = os.pathconf(path.anchor or "/", "PC_NAME_MAX"), os.pathconf(path.anchor or "/", "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise MatchnasError(f"{what}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; "
                                f"this file system allows {name_max}")
    if len(os.fsencode(str(path))) >= path_max:
        raise MatchnasError(f"{what}: the path is {len(os.fsencode(str(path)))} bytes long; this system allows {path_max - 1}")


def check_writable(path: str | Path, what: str, folder: bool | None = None) -> None:
    """Refuse, before any work, a destination that cannot be created or written: the nearest
    existing folder on the way to ``path`` must be a writable folder; no part of the way may be a
    symbolic link to nothing (or a loop of links); names and the path must fit the file system.
    ``folder``: True, ``path`` is to be a folder (an existing file is refused); False, a file
    (an existing folder is refused); None, either."""
    path = as_path(path, what).absolute()
    _check_names(path, what)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # lstat works, stat does not: a dangling link or a loop
            raise MatchnasError(f"{what} {path}: {existing} is a symbolic link to nothing (or a loop of links)")
        existing = existing.parent
    if existing == path and path.is_dir():
        if folder is False:
            raise MatchnasError(f"{what} {path}: a folder; give the name of the file to write")
        writable = path
    elif existing == path:
        if folder is True:
            raise MatchnasError(f"{what} {path}: a file, not a folder")
        writable = path.parent  # an existing file, to be replaced
    else:
        writable = existing
        if not writable.is_dir():
            raise MatchnasError(f"{what} {path}: {writable} is a file, not a folder")
    if not os.access(writable, os.W_OK | os.X_OK):
        raise MatchnasError(f"{what} {path}: cannot write in {writable} (permission denied or read-only)")


# -- reading -----------------------------------------------------------------------------------
def check_readable(path: str | Path, what: str) -> None:
    """Refuse a file this process may not read (another user's, mode 0600) with one line, before
    a library that would fail on it with its own message (or a traceback) opens it."""
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        raise MatchnasError(f"{path}: a folder, expected {what}") from None
    except FileNotFoundError:
        raise MatchnasError(f"{what} not found: {path}") from None
    except OSError as err:
        raise MatchnasError(f"{path}: cannot read {what} ({err.strerror or err})") from None


def read_text(path: str | Path, what: str) -> str:
    """The text of ``path``, or a one-line error naming the file and ``what`` it should be."""
    path = Path(path)
    if path.is_dir():
        raise MatchnasError(f"{path}: a folder, expected {what}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatchnasError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as err:
        raise MatchnasError(f"{path}: binary data at byte {err.start}, expected {what} (UTF-8 text)") from None
    except OSError as err:
        raise MatchnasError(f"{path}: cannot read it ({err.strerror or err})") from None


def read_yaml(path: str | Path, what: str) -> Any:
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise MatchnasError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def read_json(path: str | Path, what: str) -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MatchnasError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}), expected {what}") from None


# -- strict JSON -------------------------------------------------------------------------------
def finite(value: Any) -> Any:
    """``value`` with every non-finite float (inf, nan) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(value: Any, **kwargs: Any) -> str:
    """Strict JSON (no ``NaN``/``Infinity``, which strict parsers reject)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, to_json(value, indent=indent) + "\n")
