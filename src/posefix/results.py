"""COCO keypoint results files read and validated into :class:`~posefix.detections.Detections`,
as a stream, a chunk of entries at a time; the check of their image ids."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .detections import Detections
from .errors import InputError, malformed
from .fields import Rows, integer, keypoint_array, number_array, number_lists
from .jsonfiles import iter_json_list
from .spec import KeypointSpec, load_spec

__all__ = ["keep_known", "load_results"]


def load_results(
    path: str | Path,
    spec: KeypointSpec | str | None,
    image_ids: Iterable[int] | None = None,
    strict: bool = False,
) -> Detections:
    """Load and validate a COCO keypoint results file (any estimator's output).

    The file is parsed as a stream, a chunk of entries at a time straight into arrays, so
    that memory holds the arrays and one chunk, not the file's Python objects.

    Args:
        path: results JSON, a list of ``{image_id, category_id, keypoints, score}``.
        spec: the keypoint layout the results must have (None: any, every detection with
            as many keypoints as the first; to check a file before the layout is known).
        image_ids: known image ids; detections of other images are skipped with a warning
            that counts them, or raise if ``strict``.
        strict: make unknown image ids an error.
    """
    path = Path(path)
    spec = load_spec(spec) if spec is not None else None
    K = spec.num_keypoints if spec is not None else None
    known = np.fromiter((int(i) for i in image_ids), dtype=np.int64) \
        if image_ids is not None else None
    chunks = iter_json_list(
        path, not_a_list="a COCO results file must be a JSON list of detections")
    with malformed(path):
        return _read_results(path, chunks, spec, K, known, strict)


def _read_results(path: Path, chunks: Iterator[list[Any]], spec: KeypointSpec | None,
                  K: int | None, known: np.ndarray | None, strict: bool) -> Detections:
    """:func:`load_results` of the file's chunks."""
    out: _Growing | None = None
    unknown, start = 0, 0
    for chunk in chunks:
        if K is None:  # no spec: every detection has the first one's count
            K = _first_keypoint_count(chunk)
        out = out or _Growing(K)
        part, skipped = _known_rows(_results_chunk(chunk, path, spec, K, start), known, strict,
                                    path, start)
        unknown += skipped
        out.append(part)
        start += len(chunk)
    _warn_results(path, start, unknown)
    return out.result() if out is not None else Detections.empty(K or 0)


def keep_known(dets: Detections, path: str | Path, image_ids: Iterable[int] | None,
               strict: bool = False) -> Detections:
    """:func:`load_results`' image check, with its warnings, of results already read (every
    row of ``path``, as ``load_results(path, None)`` returns them): the detections of the
    known images (all where ``image_ids`` is None), as a new :class:`Detections`."""
    path = Path(path)
    known = np.fromiter((int(i) for i in image_ids), dtype=np.int64) \
        if image_ids is not None else None
    part, unknown = _known_rows(dets, known, strict, path, 0)
    _warn_results(path, len(dets), unknown)
    return Detections(part.image_ids, part.keypoints, part.scores, part.boxes,
                      part.category_ids)


def _known_rows(part: Detections, known: np.ndarray | None, strict: bool, path: Path,
                start: int) -> tuple[Detections, int]:
    """``part`` (entries ``start, start + 1, ...`` of ``path``) less the detections of images
    not in ``known`` (None: every image is), and how many those were; ``strict``: an
    :class:`InputError` naming the first."""
    if known is None:
        return part, 0
    ok = np.isin(part.image_ids, known)
    if ok.all():
        return part, 0
    if strict:
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(path, f"unknown image_id {part.image_ids[i]}", start + i, "image_id")
    return part.select(ok), int((~ok).sum())


def _warn_results(path: Path, entries: int, unknown: int) -> None:
    """The warnings of a results file with no entries, or with detections skipped."""
    if entries == 0:
        warnings.warn(f"{path}: no detections (an empty results list)", stacklevel=3)
    if unknown:
        warnings.warn(f"{path}: skipped {unknown} detection(s) with an unknown image_id",
                      stacklevel=3)


class _Growing(Rows):
    """:class:`Rows` of detections."""

    FIELDS = ("image_ids", "keypoints", "scores", "boxes", "category_ids")

    def __init__(self, num_keypoints: int, capacity: int = 1 << 14) -> None:
        empty = Detections.empty(num_keypoints)
        super().__init__(tuple(getattr(empty, f) for f in self.FIELDS), capacity)

    def append(self, part: Detections) -> None:  # type: ignore[override]
        """Add rows at the end."""
        super().append(tuple(getattr(part, f) for f in self.FIELDS))

    def result(self) -> Detections:  # type: ignore[override]
        """The rows so far (views)."""
        return Detections(*super().result())


def _results_chunk(chunk: list[Any], path: Path, spec: KeypointSpec | None, K: int,
                   start: int) -> Detections:
    """Entries ``start, start + 1, ...`` of a results file as arrays, validated (K
    keypoints each: the spec's, or without one the first entry's)."""
    fast = all(type(d) is dict and "image_id" in d and "keypoints" in d and "score" in d
               for d in chunk)
    if fast:
        img = [d["image_id"] for d in chunk]
        scores = [d["score"] for d in chunk]
        fast = (set(map(type, img)) <= {int} and set(map(type, scores)) <= {int, float}
                and all(type(d.get("category_id", 1)) is int for d in chunk)
                and all(abs(i) < 1 << 63 for i in img))
    kp = number_lists([d["keypoints"] for d in chunk], 3 * K) if fast else None
    if kp is not None:
        s = np.array(scores, dtype=np.float64)
        with_box = [i for i, d in enumerate(chunk) if "bbox" in d]
        b = number_lists([chunk[i]["bbox"] for i in with_box], 4) if with_box else \
            np.zeros((0, 4))
        if np.isfinite(s).all() and (s >= 0).all() and b is not None and \
                all(abs(d.get("category_id", 1)) < 1 << 63 for d in chunk):
            boxes = np.full((len(chunk), 4), np.nan)
            boxes[with_box] = b
            return Detections(
                image_ids=np.array(img, dtype=np.int64), keypoints=kp.reshape(-1, K, 3),
                scores=s, boxes=boxes,
                category_ids=np.array([int(d.get("category_id", 1)) for d in chunk],
                                      dtype=np.int64))
    rows = [_result_entry(d, path, spec, K, start + i) for i, d in enumerate(chunk)]
    return Detections(*(np.array(c) for c in zip(*rows, strict=True)))


def _result_entry(d: Any, path: Path, spec: KeypointSpec | None, K: int, i: int) -> tuple:
    """One results entry checked field by field: (image id, keypoints, score, box,
    category id), or an :class:`InputError` naming the entry and field."""
    if not isinstance(d, dict):
        raise InputError(path, "must be an object", i)
    for key in ("image_id", "keypoints", "score"):
        if key not in d:
            raise InputError(path, "missing", i, key)
    img = integer(d["image_id"], path, i, "image_id")
    kp = keypoint_array(d["keypoints"], path, i, spec, "score", K)  # checks 3K values
    s = d["score"]
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
        raise InputError(path, f"must be a finite number, got {s!r}", i, "score")
    if s < 0:
        raise InputError(path, f"must not be negative, got {s}", i, "score")
    box = np.full(4, np.nan)
    if "bbox" in d:
        b = number_array(d["bbox"], path, i, "bbox")
        if b.size != 4:
            raise InputError(path, f"must have 4 values, got {b.size}", i, "bbox")
        box = b
    return img, kp, float(s), box, integer(d.get("category_id", 1), path, i, "category_id")


def _first_keypoint_count(data: list) -> int:
    """K of the first detection of a results list (0 where it cannot tell)."""
    first = data[0].get("keypoints") if data and isinstance(data[0], dict) else None
    if not isinstance(first, list):
        return 0
    if first and all(isinstance(v, list) and len(v) == 3 for v in first):
        return len(first)  # [[x, y, s], ...]: refused, but the message can say 3K
    return len(first) // 3 if len(first) % 3 == 0 else 0
