"""Fields of JSON entries as checked numbers and arrays: finite, within bounds, of the
right count, or an :class:`~posefix.errors.InputError` naming the file, the entry and the
field; and :class:`Rows`, arrays grown a part at a time."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .spec import KeypointSpec

__all__ = ["MAX_AREA", "MAX_COORDINATE", "Rows", "check_numbers", "integer", "keypoint_array",
           "number", "number_array", "number_lists"]


#: The largest coordinate (or box side) a file may hold: far beyond any image, and small
#: enough that squares and areas stay finite even in float32 (1e308 overflowed them).
MAX_COORDINATE = 1e15


#: The largest area (a box of MAX_COORDINATE on each side).
MAX_AREA = MAX_COORDINATE ** 2


def number_array(values: Any, path: Path, index: int | None, name: str,
                  limit: float = MAX_COORDINATE) -> np.ndarray:
    if not isinstance(values, list):
        raise InputError(path, f"must be a list of numbers, got {type(values).__name__}",
                         index, name)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InputError(path, "has a non-numeric value", index, name)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond a double
        arr = np.array([np.inf])
    return check_numbers(arr, path, index, name, limit)


def check_numbers(arr: np.ndarray, path: str | Path, index: int | None, name: str,
                  limit: float = MAX_COORDINATE) -> np.ndarray:
    """``arr`` if every value is finite and within ``limit`` of zero, else an
    :class:`InputError` naming the entry and field."""
    if not np.all(np.isfinite(arr)):
        raise InputError(path, "has a NaN or infinite value", index, name)
    if arr.size and np.abs(arr).max() > limit:
        raise InputError(path, f"has a value beyond {limit:g} ({np.abs(arr).max():g}): no "
                         "image is that large", index, name)
    return arr


def number(value: Any, path: Path, index: int, name: str, limit: float = MAX_AREA
            ) -> float:
    """A finite number within ``limit``, or an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"must be a number, got {value!r:.40}", index, name)
    try:
        v = float(value)
    except OverflowError:  # an integer beyond a double
        v = math.inf
    return float(check_numbers(np.array([v]), path, index, name, limit)[0])


def integer(value: Any, path: Path, index: int, name: str) -> int:
    """A JSON integer (not a string, as pycocotools refuses one; not a bool) that fits 64
    bits, or an :class:`InputError`."""
    if type(value) is not int:
        kind = "a string" if isinstance(value, str) else type(value).__name__
        raise InputError(path, f"must be an integer, got {kind} {value!r:.40}"
                         + (" (pycocotools refuses a string id)"
                            if isinstance(value, str) else ""), index, name)
    if not -(1 << 63) <= value < (1 << 63):
        raise InputError(path, f"must fit in 64 bits, got {value:.3g}", index, name)
    return value


def keypoint_array(values: Any, path: Path, index: int, spec: KeypointSpec | None,
                    third: str, K: int) -> np.ndarray:
    """Entry ``index``'s ``keypoints``: a flat list of 3K numbers, as (K, 3); ``spec`` None:
    K is the first entry's."""
    if isinstance(values, list) and any(isinstance(v, (list, tuple)) for v in values):
        n = f"{3 * K} " if K else "3K "
        raise InputError(path, f"must be a flat list of {n}numbers ({K or 'K'} keypoints x 3: "
                         f"x, y, {third}), not a list of lists", index, "keypoints")
    kp = number_array(values, path, index, "keypoints")
    if not K:
        raise InputError(path, f"has {kp.size} values, not 3 per keypoint", index, "keypoints")
    if kp.size != 3 * K:
        needs = f"spec {spec.name} needs" if spec is not None else "entry 0 has"
        raise InputError(path, f"has {kp.size} values; {needs} {3 * K} ({K} keypoints x 3)",
                         index, "keypoints")
    return kp.reshape(K, 3)


def number_lists(lists: list[Any], size: int | None) -> np.ndarray | None:
    """``lists`` as a float array if every one is a list of ``size`` finite numbers (not
    bools), else None (then the entries are checked one by one for the message)."""
    if not all(type(v) is list for v in lists):
        return None
    if size is not None and any(len(v) != size for v in lists):
        return None
    if not set(map(type, itertools.chain.from_iterable(lists))) <= {int, float}:
        return None
    try:
        arr = np.array(lists, dtype=np.float64)
    except OverflowError:  # an integer beyond a double: the checked path names it
        return None
    if arr.ndim != 2 or not np.isfinite(arr).all() or \
            np.abs(arr).max(initial=0) > MAX_COORDINATE:
        return None
    return arr


class Rows:
    """Arrays appended to in parts, a row at a time, in arrays that double when full: large
    arrays are mapped memory, returned whole when freed, so that a parse leaves no holes
    behind among the parts it has freed."""

    def __init__(self, empty: tuple[np.ndarray, ...], capacity: int = 1 << 14) -> None:
        self.n = 0
        self.arrays = empty
        self._resize(capacity)

    def _resize(self, capacity: int) -> None:
        self.arrays = tuple(self._grown(old, capacity) for old in self.arrays)

    def _grown(self, old: np.ndarray, capacity: int) -> np.ndarray:
        new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
        new[:self.n] = old[:self.n]
        return new

    def append(self, part: tuple[np.ndarray, ...]) -> None:
        """Add rows at the end."""
        end = self.n + len(part[0])
        if end > len(self.arrays[0]):
            self._resize(max(end, 2 * len(self.arrays[0])))
        for a, p in zip(self.arrays, part, strict=True):
            a[self.n:end] = p
        self.n = end

    def result(self) -> tuple[np.ndarray, ...]:
        """The rows so far (views: the unused capacity is never touched, so never paged)."""
        return tuple(a[:self.n] for a in self.arrays)
