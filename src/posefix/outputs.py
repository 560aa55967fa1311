"""The one guard of every file and folder a verb writes.

Before any work starts, each verb hands :func:`check_outputs` what it will write and what
it reads. An output is refused (:class:`~posefix.errors.InputError`, one line) where it

* is one of the run's inputs, by any path: the same resolved path, or the same file through
  a symbolic or hard link (``st_dev`` and ``st_ino``), or a file read from an input folder
  (:func:`folder_inputs`);
* cannot be written: a file target that is a folder (or a folder target that is a file),
  a parent that is a file, a folder where no file can be created (read-only, a read-only
  file system, no permission: tried by creating and removing a temporary file, so that
  it holds for root too).

Files are then written atomically with the user's umask
(:func:`posefix.jsonfiles.atomic_write`); :func:`check_written` re-checks one file an
output folder is about to receive.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

__all__ = ["Inputs", "check_outputs", "check_written", "folder_inputs", "same_file"]

PathLike = str | os.PathLike
#: ``name -> path`` (None: not given), a path, or several paths under one name.
Inputs = Mapping[str, PathLike | Iterable[PathLike] | None]


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat()
    except (OSError, ValueError):
        return None


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` are the same path, or name the same existing file or folder
    (through links, hard links included)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a link loop: compared by what stat says
        pass
    sa, sb = _stat(a), _stat(b)
    return sa is not None and sb is not None and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@dataclass(frozen=True)
class _Input:
    name: str
    path: Path


def _flatten(inputs: Inputs) -> list[_Input]:
    out = []
    for name, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        out += [_Input(name, Path(v)) for v in values if v is not None]
    return out


def _overlap(out: Path, inputs: list[_Input]) -> _Input | None:
    """The input that ``out`` is (a folder read file by file is given as its files)."""
    return next((i for i in inputs if same_file(out, i.path)), None)


def folder_inputs(path: PathLike | None, pattern: str = "*.json") -> list[Path]:
    """A results folder and the files of it that are read (``pattern``), as inputs; a
    file: itself; None: none."""
    if path is None:
        return []
    p = Path(path)
    return [p, *sorted(p.glob(pattern))] if p.is_dir() else [p]


def _nearest_existing(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def _writable_folder(folder: Path, out: Path, flag: str) -> None:
    """``out`` (a file or folder that may not exist yet) can be made under ``folder``'s
    nearest existing ancestor: it is a folder and a file can be created in it."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise InputError(out, f"cannot write {flag} here: {base} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".posefix-probe-", dir=base)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise InputError(out, f"cannot write {flag} here: {base}: {why}") from None
    os.close(fd)
    os.unlink(tmp)


def check_outputs(files: Mapping[str, PathLike | None] | None = None,
                  folders: Mapping[str, PathLike | None] | None = None,
                  inputs: Inputs | None = None) -> None:
    """Refuse, before any work, an output that is an input or cannot be written.

    Args:
        files: option name (e.g. ``"--out"``) -> file to write (None: not written).
        folders: option name -> folder to write into (created if absent).
        inputs: what the run reads: name -> path or paths (None: not given).

    Raises:
        InputError: naming the output, what it clashes with or why it cannot be written.
    """
    ins = _flatten(inputs or {})
    outs = [(flag, Path(p), False) for flag, p in (files or {}).items() if p is not None]
    outs += [(flag, Path(p), True) for flag, p in (folders or {}).items() if p is not None]
    for flag, p, is_folder in outs:
        if str(p) == "":
            raise InputError(p, f"{flag} is empty")
        clash = _overlap(p, ins)
        if clash is not None:
            raise InputError(p, f"refusing to write over the input {clash.name} file "
                             f"({clash.path}); choose another {flag}")
        if is_folder:
            if p.exists() and not p.is_dir():
                raise InputError(p, f"is a file, not a folder; {flag} must be a folder")
            _writable_folder(p, p, flag)
        else:
            if p.is_dir():
                raise InputError(p, f"is a folder; {flag} must be a file path")
            _writable_folder(p.parent, p, flag)
    for i, (flag, p, _) in enumerate(outs):
        for flag2, q, _ in outs[i + 1:]:
            if same_file(p, q):
                raise InputError(p, f"{flag} and {flag2} are the same path")


def check_written(path: PathLike, inputs: Inputs | None = None) -> Path:
    """``path``, a file an output folder is about to receive, unless it is an input (an
    :class:`InputError`): a picture named after an image must not replace that image."""
    p = Path(path)
    clash = _overlap(p, _flatten(inputs or {}))
    if clash is not None:
        raise InputError(p, f"refusing to write over the input {clash.name} file "
                         f"({clash.path})")
    return p
