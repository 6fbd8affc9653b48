"""Writing tuner's output files and folders: atomically, and never over what tuner did not write.

Every command that writes a file or a folder (``export``, ``lr-find``, ``report``) goes through
this module:

- :func:`write_file` writes a file through a temporary file in the same folder and
  ``os.replace``. An existing file is replaced only when it is empty or recognisably tuner's own
  output of the same kind (its :class:`FileKind` says how to recognise one); anything else, a
  folder, or a symbolic link is refused with :class:`OutputError` (exit 2), and nothing is
  written.
- :func:`write_folder` builds a folder in a temporary sibling and swaps it into place. An
  existing folder is replaced only when it is empty or holds only what tuner writes there
  (its marker file :data:`MARKER` plus the entries its :class:`FolderKind` names); anything else
  is refused. The swap is one ``renameat2(RENAME_EXCHANGE)`` on Linux (no moment without the
  folder); elsewhere it is two renames, and a run killed between them is repaired by the next
  run (the previous folder is put back).
- Nothing is ever removed recursively: an old or leftover folder is emptied entry by entry, of
  the entries its kind writes only, and then removed with ``rmdir`` (which fails, leaving it,
  if anything else is inside).

Temporary names are ``.<name>.tuner-tmp-<host>-<pid>-<random>`` (and ``.tuner-old-`` for a
folder parked during a swap) next to the target. A later run to the same target removes those a
killed run left behind: only names of this pattern, made on this host by a process that no
longer runs (a concurrent run's temporaries are left alone).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tuner.errors import TunerError

__all__ = [
    "MARKER",
    "FileKind",
    "FolderKind",
    "OutputError",
    "recover_folder",
    "check_file_target",
    "check_folder_target",
    "write_file",
    "write_folder",
]

MARKER = ".tuner-output"
T = TypeVar("T")


class OutputError(TunerError):
    """An output path cannot be written without losing something tuner did not write."""


@dataclass(frozen=True)
class FileKind:
    """A kind of output file.

    Attributes:
        name: what it is, for messages ("export", "lr-find page").
        recognise: True when an existing file is tuner's own output of this kind (it may then be
            replaced). It must not raise.
    """

    name: str
    recognise: Callable[[Path], bool]


@dataclass(frozen=True)
class FolderKind:
    """A kind of output folder.

    Attributes:
        name: what it is, for messages and the marker file ("report").
        owns: True for an entry name this kind writes into its folder (e.g. ``report.html``).
        legacy: True for an unmarked folder written before the marker existed (optional).
    """

    name: str
    owns: Callable[[str], bool]
    legacy: Callable[[Path], bool] | None = None


# ---------------------------------------------------------------------------------------------
# Temporary names.

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TMP_RE = re.compile(r"\.tuner-(tmp|old)-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}$")



def _a(noun: str) -> str:
    """``noun`` with its indefinite article ("an export", "an lr-find page", "a report")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' or noun.startswith('lr') else 'a'} {noun}"

def _temp_name(target: Path, tag: str = "tmp") -> Path:
    suffix = f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.parent / f".{target.name}.tuner-{tag}-{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it runs, as another user
        return True
    return True


def _leftovers(target: Path) -> list[tuple[str, Path]]:
    """Temporaries of killed runs next to ``target``: ``(tag, path)``, tag 'tmp' or 'old'."""
    prefix = f".{target.name}.tuner-"
    found = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = _TMP_RE.search(entry.name)
        if m is None or entry.name[: m.start()] != f".{target.name}":
            continue
        tag, host, pid = m.group(1), m.group(2), int(m.group(3))
        if host == _HOST and not _pid_alive(pid):
            found.append((tag, Path(entry.path)))
    return found


# ---------------------------------------------------------------------------------------------
# Files.


def _refuse(path: Path, why: str, what: str) -> OutputError:
    return OutputError(f"{path} {why}; tuner overwrites only {what} it wrote itself, so nothing "
                       f"was written: choose another --out.")


def check_file_target(path: Path, kind: FileKind) -> None:
    """Raise unless ``path`` may be written: missing, empty, or tuner's own ``kind`` file.

    Raises:
        OutputError: ``path`` is a folder, a symbolic link, not a regular file, or a file that
            is not recognisably a tuner ``kind.name``.
    """
    if path.is_symlink():
        raise _refuse(path, "is a symbolic link", _a(kind.name))
    if not path.exists():
        return
    if path.is_dir():
        raise OutputError(f"{path} is a folder: --out needs the path of a file for the "
                          f"{kind.name} (a new one, or a previous {kind.name}).")
    if not path.is_file():
        raise _refuse(path, "exists and is not a regular file", _a(kind.name))
    if path.stat().st_size == 0:
        return
    if not kind.recognise(path):
        raise _refuse(path, f"exists and is not a tuner {kind.name}", _a(kind.name))


def _clean_file_leftovers(path: Path) -> None:
    for tag, leftover in _leftovers(path):
        if tag == "tmp" and leftover.is_file() and not leftover.is_symlink():
            try:
                leftover.unlink()
            except OSError:
                pass


def write_file(path: Path, text: str, kind: FileKind) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file, then ``os.replace``.

    The file gets the mode a plain ``open()`` would give it. Leftover temporaries of killed runs
    next to ``path`` are removed first. Returns ``path``.

    Raises:
        OutputError: see :func:`check_file_target`; nothing is written.
        OSError: the folder cannot be created or written.
    """
    path = Path(path)
    check_file_target(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_file_leftovers(path)
    tmp = _temp_name(path)
    umask = os.umask(0)
    os.umask(umask)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        check_file_target(path, kind)  # again: the sweep or build may have taken minutes
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Folders.


def _marker_kind(folder: Path) -> str | None:
    try:
        return (folder / MARKER).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _foreign_entry(folder: Path, kind: FolderKind) -> str | None:
    """The first entry of ``folder`` that ``kind`` does not write (None: only own entries)."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name == MARKER:
            continue
        if not kind.owns(entry.name) or entry.is_symlink() or not entry.is_file():
            return entry.name
    return None


def _why_not_own(folder: Path, kind: FolderKind) -> str | None:
    """Why ``folder`` is not tuner's own ``kind`` folder (None: it is, or it is empty)."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not names:
        return None
    marked = _marker_kind(folder)
    if marked is not None and marked != kind.name:
        return f"is a tuner {marked} folder, not {_a(kind.name)} folder"
    foreign = _foreign_entry(folder, kind)
    if foreign is not None:
        return f"holds {foreign!r}, which is not part of a tuner {kind.name}"
    if marked is None and not (kind.legacy and kind.legacy(folder)):
        return f"is not a folder tuner wrote (no {MARKER} marker)"
    return None


def _holds_cwd(folder: Path) -> bool:
    try:
        return Path.cwd().resolve().is_relative_to(folder.resolve())
    except OSError:  # the current folder was removed
        return False


def check_folder_target(target: Path, kind: FolderKind) -> None:
    """Raise unless ``target`` may be (re)placed: missing, empty, or tuner's own ``kind`` folder.

    Raises:
        OutputError: ``target`` is a file, a symbolic link, or a folder holding anything that is
            not part of a previous ``kind`` written by tuner.
    """
    if target.is_symlink():
        raise _refuse(target, "is a symbolic link", _a(f"{kind.name} folder"))
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"{target} exists and is not a folder; pass --out DIR (a new or empty "
                          f"folder, or a previous {kind.name}).")
    if _holds_cwd(target):
        raise OutputError(f"{target} is the current folder or holds it; tuner never replaces "
                          f"it: choose a new or empty folder for --out.")
    why = _why_not_own(target, kind)
    if why is not None:
        raise OutputError(
            f"{target} {why}; tuner replaces only a folder holding a previous {kind.name} "
            f"and writes nothing: choose a new or empty folder for --out."
        )


def _empty_and_remove(folder: Path, kind: FolderKind) -> bool:
    """Remove ``kind``'s own entries of ``folder``, then the folder if that emptied it."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
        for entry in entries:
            if entry.name == MARKER or (kind.owns(entry.name) and entry.is_file()
                                         and not entry.is_symlink()):
                os.unlink(entry.path)
        os.rmdir(folder)
    except OSError:
        return False
    return True


def recover_folder(target: Path, kind: FolderKind) -> None:
    """Repair what killed runs left next to ``target``.

    A parked previous folder with no ``target`` (killed between the two renames) is put back;
    other leftovers of ``kind`` (temporary folders, parked folders already replaced) are
    emptied of ``kind``'s entries and removed.
    """
    leftovers = _leftovers(target)
    for tag, path in sorted(leftovers, key=lambda x: x[0] != "old"):
        if not path.is_dir() or path.is_symlink():
            continue
        if tag == "old" and not os.path.lexists(target):
            try:
                os.rename(path, target)
                continue
            except OSError:
                pass
        if tag == "tmp" and _marker_kind(path) not in (kind.name, None):
            continue
        if tag == "old" and _why_not_own(path, kind) is not None:
            continue
        _empty_and_remove(path, kind)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(tmp: Path, target: Path, kind: FolderKind) -> None:
    """Put the complete folder ``tmp`` at ``target``, replacing tuner's own previous folder."""
    if not os.path.lexists(target):
        os.rename(tmp, target)  # fails (nothing lost) if another process just created it
        return
    check_folder_target(target, kind)
    if _exchange(tmp, target):
        _empty_and_remove(tmp, kind)  # the previous folder, now at the temporary name
        return
    parked = _temp_name(target, "old")
    os.rename(target, parked)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(parked, target)
        raise
    _empty_and_remove(parked, kind)


def write_folder(target: Path, build: Callable[[Path], T], kind: FolderKind) -> T:
    """Build a ``kind`` folder at ``target`` atomically; returns what ``build`` returns.

    ``build(folder)`` writes the files into a temporary sibling folder (which already holds the
    marker :data:`MARKER`); only entries for which ``kind.owns(name)`` is true may be written.
    Then the folder is swapped into place; a previous folder at ``target`` goes away only when
    :func:`check_folder_target` allows it. Leftovers of killed runs are repaired first (see
    :func:`recover_folder`). When ``build`` raises, nothing changes at ``target``.

    Raises:
        OutputError: see :func:`check_folder_target`; nothing is written.
        OSError: the parent folder cannot be created or written.
    """
    target = Path(target)
    if target.parent.is_dir():
        recover_folder(target, kind)
    check_folder_target(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(target)
    os.mkdir(tmp)  # the umask's mode: an ordinary folder
    try:
        (tmp / MARKER).write_text(f"{kind.name}\n", encoding="utf-8")
        result = build(tmp)
        _swap_into_place(tmp, target, kind)
    except BaseException:
        if tmp.is_dir():
            _empty_and_remove(tmp, kind)
        raise
    return result
