"""JSON files: read whole or as a stream of blocks, written atomically.

Bad input raises :class:`~posefix.errors.InputError` naming the file (and, from the
stream, the line and column); nothing is written unless a whole output is ready
(:func:`atomic_write`, which the JSON writers use and any other file may).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from .errors import InputError

__all__ = [
    "atomic_write",
    "check_file",
    "iter_json_list",
    "iter_json_object",
    "new_file_mode",
    "read_json",
    "round_like_python",
    "write_json_atomic",
    "write_json_list_atomic",
]


def round_like_python(values: np.ndarray, ndigits: int) -> np.ndarray:
    """``round(float(v), ndigits)`` of every value, vectorised: the same doubles.

    ``np.round`` scales, rounds and unscales, which differs from Python's correctly
    rounded decimal rounding only where the scaled value lies within its own rounding
    error of a half; those few values are rounded by Python.
    """
    a = np.asarray(values, dtype=np.float64)
    scale = 10.0 ** ndigits
    y = a * scale
    out = np.round(a, ndigits)
    with np.errstate(invalid="ignore"):
        near_half = np.abs(y - np.floor(y) - 0.5) <= np.maximum(1e-6, np.abs(y) * 1e-14)
        unsure = near_half | ~(np.abs(y) < 2.0 ** 50)
    if unsure.any():
        idx = np.flatnonzero(unsure.reshape(-1))
        flat = out.reshape(-1)
        flat[idx] = [round(v, ndigits) for v in a.reshape(-1)[idx].tolist()]
    return out


def check_file(path: Path) -> None:
    """An :class:`InputError` unless ``path`` is a file: it does not exist, or is a folder
    (said so: a folder of per-image files is read where a format allows one)."""
    if path.is_dir():
        raise InputError(path, "is a folder, not a JSON file")
    if not path.is_file():
        raise InputError(path, "is not a regular file (a device, a pipe?)" if path.exists()
                         else "file does not exist")


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 text (a BOM dropped), or an :class:`InputError`: no JSON file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not a JSON file: not UTF-8 text (byte 0x{data[e.start]:02x} "
                         f"at offset {e.start})") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising :class:`InputError` for a missing, empty, undecodable or
    broken file."""
    path = Path(path)
    check_file(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    try:  # the fast parser; Python's json for what it refuses (NaN, huge ints, errors)
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    text = _decode(data, path)
    del data
    if not text.strip():
        raise InputError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            path, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    except RecursionError:
        raise InputError(path, "not valid JSON here: nested too deeply") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise InputError(path, f"not valid JSON here ({e})") from None


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file under the current umask (0644 under the
    usual 022): what every file posefix writes gets, though written via a private
    temporary file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


class _ListReader:
    """The elements of a JSON list in a file, a block of bytes at a time (see
    :func:`iter_json_list`)."""

    SPACE = b" \t\n\r"

    def __init__(self, path: Path, f: IO[bytes], block: int) -> None:
        self.path, self.f, self.block = path, f, block
        self.buf, self.pos, self.seen, self.done = b"", 0, 0, False

    def more(self) -> bool:
        """Read the next block (dropping what was consumed); False at the end of file."""
        data = self.f.read(self.block)
        if not data:
            self.done = True
            return False
        self.seen += self.pos
        self.buf, self.pos = self.buf[self.pos:] + data, 0
        return True

    def peek(self) -> int | None:
        """The next byte that is not white space (not consumed), or None at the end."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in self.SPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def error(self, msg: str, at: int) -> InputError:
        """``msg`` at byte ``at`` of the buffer, as line and column of the file."""
        with open(self.path, "rb") as f:
            head = f.read(self.seen + at).decode("utf-8", "replace")
        line = head.count("\n") + 1
        return InputError(self.path, f"not valid JSON ({msg} at line {line}, column "
                          f"{len(head) - (head.rfind(chr(10)) + 1) + 1})")

    def fast(self) -> list[Any] | None:
        """The elements from here to the last ``}`` of the buffer that ends an element,
        parsed by orjson in one call; None where no such cut parses (then :meth:`slow`).

        A cut is tried after each of the last few ``},`` sequences: the text from an
        element's start up to a ``}`` parses as a list of values only where the ``}`` ends
        an element (a prefix of an object or a string is no value)."""
        end = len(self.buf)
        for _ in range(3):
            cut = self.buf.rfind(b"},", self.pos, end)
            while cut < 0 and end == len(self.buf) and self.more():
                end = len(self.buf)
                cut = self.buf.rfind(b"},", self.pos, end)
            if cut < 0:
                return None
            wrapped = b"[" + self.buf[self.pos:cut + 1] + b"]"
            try:
                values = orjson.loads(wrapped)
            except orjson.JSONDecodeError as e:
                if e.msg.startswith("unexpected content after document"):
                    return self._to_list_end(wrapped, e.pos)
                end = cut
                continue
            self.pos = cut + 2
            return values
        return None

    def _to_list_end(self, wrapped: bytes, at: int) -> list[Any] | None:
        """The elements up to the end of the list, where a cut of :meth:`fast` lay past it
        (in a list inside an object): ``wrapped`` parsed whole up to character ``at``, and
        the position left on the list's ``]``."""
        head = wrapped.decode("utf-8", "surrogateescape")[:at].encode(
            "utf-8", "surrogateescape").rstrip(self.SPACE)
        try:
            values = orjson.loads(head)
        except orjson.JSONDecodeError:
            return None
        self.pos += len(head) - 1  # on the ']' (the caller steps back one byte)
        return values

    def slow(self) -> Any:
        """One element by Python's json (exact errors; NaN and huge integers)."""
        decode = json.JSONDecoder().raw_decode
        while True:
            text = self.buf[self.pos:].decode("utf-8", "surrogateescape")
            try:
                value, end = decode(text)
            except json.JSONDecodeError as e:
                if self.more():
                    continue
                raise self.error(e.msg, self.pos + len(
                    text[:e.pos].encode("utf-8", "surrogateescape"))) from None
            except RecursionError:
                raise InputError(self.path, "not valid JSON here: nested too deeply") from None
            except ValueError as e:  # an integer of more digits than Python converts
                raise InputError(self.path, f"not valid JSON here ({e})") from None
            if end < len(text) or self.done or not self.more():
                self.pos += len(text[:end].encode("utf-8", "surrogateescape"))
                return value


def iter_json_list(path: str | Path, block: int = 1 << 22,
                   not_a_list: str = "the file must hold a JSON list") -> Iterator[list[Any]]:
    """The elements of a JSON file holding one list, in chunks, parsed a block at a time.

    Memory holds one block and its elements however long the file is. Most blocks are
    parsed by orjson; Python's json takes over where it cannot (then the errors are
    :func:`read_json`'s, with line and column). A file that is no list raises
    ``not_a_list``.
    """
    path = Path(path)
    check_file(path)
    with open(path, "rb") as f:
        r = _ListReader(path, f, block)
        c = r.peek()
        if c is None:
            raise InputError(path, "file is empty")
        if c != ord("["):
            read_json(path)  # a broken file is "not valid JSON", as before
            raise InputError(path, not_a_list)
        r.pos += 1
        yield from _list_chunks(r)
        if r.peek() is not None:
            raise r.error("Extra data", r.pos)


def _list_chunks(r: _ListReader) -> Iterator[list[Any]]:
    """The elements of the list whose ``[`` ``r`` has just read, in chunks; returns with the
    ``]`` read."""
    first = True
    while True:
        c = r.peek()
        if c == ord("]"):
            r.pos += 1
            return
        if not first:
            if c != ord(","):
                raise r.error("Expecting ',' delimiter", r.pos)
            r.pos += 1
            c = r.peek()
        if c is None:
            raise r.error("Expecting value", r.pos)
        chunk = r.fast()
        yield chunk if chunk is not None else [r.slow()]
        first = False
        if chunk is not None:
            r.pos -= 1  # leave the comma after the last element to the loop


def iter_json_object(path: str | Path, block: int = 1 << 22
                     ) -> Iterator[tuple[str, Any]]:
    """The members of a file holding one JSON object, read a block at a time: ``(key,
    value)``, a list value as an iterator of chunks of its elements (drained here if the
    caller leaves some), any other value whole."""
    path = Path(path)
    with open(path, "rb") as f:
        r = _ListReader(path, f, block)
        if r.peek() != ord("{"):
            raise InputError(path, "not a JSON object")
        r.pos += 1
        first = True
        while r.peek() != ord("}"):
            if not first:
                if r.peek() != ord(","):
                    raise r.error("Expecting ',' delimiter", r.pos)
                r.pos += 1
                r.peek()
            key = r.slow()
            if not isinstance(key, str) or r.peek() != ord(":"):
                raise r.error("Expecting property name and ':'", r.pos)
            r.pos += 1
            if r.peek() == ord("["):
                r.pos += 1
                chunks = _list_chunks(r)
                yield key, chunks
                for _ in chunks:
                    pass
            else:
                yield key, r.slow()
            first = False
        r.pos += 1
        if r.peek() is not None:
            raise r.error("Extra data", r.pos)


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *,
                 binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    Nothing is left half-written: on any error the temporary file is removed and ``path``
    keeps its old content (or stays absent). The file gets the user's umask, as with
    ``open()`` (:func:`new_file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp's file is private (0600)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
                       ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = None) -> Path:
    """Write JSON to a temporary file beside ``path`` and rename it into place.

    Without ``indent`` the text is encoded whole by the json module's C encoder
    (``json.dump`` to a file runs its pure-Python one): the same bytes, 5-10x faster."""
    if indent is None:
        text = json.dumps(obj)
        return atomic_write(path, lambda f: f.write(text))
    return atomic_write(path, lambda f: json.dump(obj, f, indent=indent))


def write_json_list_atomic(path: str | Path, chunks: Iterable[list[Any]]) -> Path:
    """Write a JSON list given as chunks of its elements, atomically, a chunk at a time.

    Encoded by orjson (numpy arrays and scalars as their numbers): floats come out as the
    shortest text that reads back as the same double, as Python's json writes them (its
    ``1e-07`` is orjson's ``1e-7``). The elements must be finite numbers, strings, lists,
    dicts with string keys and 64-bit integers: orjson writes NaN as ``null``.
    """
    opts = orjson.OPT_SERIALIZE_NUMPY

    def write(f: IO[bytes]) -> None:
        f.write(b"[")
        first = True
        for chunk in chunks:
            if not chunk:
                continue
            if not first:
                f.write(b",")
            f.write(orjson.dumps(chunk, option=opts)[1:-1])
            first = False
        f.write(b"]")

    return atomic_write(path, write, binary=True)
