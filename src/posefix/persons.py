"""The person annotations of a COCO keypoint file as arrays (keypoints, boxes, areas,
crowd flags, image and annotation ids): a list at once where every entry passes the fast
checks, else one entry at a time so that the error names the entry and field."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .fields import (
    MAX_AREA,
    MAX_COORDINATE,
    Rows,
    integer,
    keypoint_array,
    number,
    number_array,
    number_lists,
)
from .spec import KeypointSpec

__all__ = ["check_unique_ids", "person_arrays", "person_arrays_checked", "person_chunks",
           "person_entries"]


def person_entries(entries: list[Any], path: Path, start: int) -> list[dict]:
    """The person annotations (``category_id`` 1, the default) of entries ``start, start +
    1, ...`` of ``annotations``; an entry that is no object, or whose ``category_id`` is no
    integer, is an :class:`InputError`."""
    out = []
    for i, a in enumerate(entries, start):
        if type(a) is not dict:
            raise InputError(path, "must be an object", i, "annotations")
        if integer(a.get("category_id", 1), path, i, "annotations.category_id") == 1:
            out.append(a)
    return out


def person_chunks(chunks: Iterator[list[Any]], K: int | None, known: Collection[int] | None
                   ) -> tuple[int | None, tuple[np.ndarray, ...] | None] | None:
    """The person arrays of the ``annotations`` list, built a chunk at a time: (K, arrays or
    None where there is no person), K the spec's or, where the spec is not known yet, the
    first person's; None where a chunk needs the checked path."""
    rows: Rows | None = None
    start = 0
    for chunk in chunks:
        anns = [a for a in chunk if type(a) is dict and type(a.get("category_id", 1)) is int
                and a.get("category_id", 1) == 1]
        if len(anns) != len(chunk) and any(
                type(a) is not dict or type(a.get("category_id", 1)) is not int for a in chunk):
            return None
        del chunk
        if not anns:
            continue
        if K is None:
            kp = anns[0].get("keypoints")
            if type(kp) is not list or len(kp) % 3:
                return None
            K = len(kp) // 3
        part = person_arrays(anns, K, known, start)
        if part is None:
            return None
        rows = rows or Rows(tuple(a[:0] for a in part))
        rows.append(part)
        start += len(anns)
    return K, rows.result() if rows is not None else None


def person_arrays(anns: list[dict], K: int, known: Collection[int] | None, start: int = 0
                      ) -> tuple[np.ndarray, ...] | None:
    """The person arrays of :func:`load_ground_truth` for a list of person annotations at
    once (entries ``start, start + 1, ...`` of those of the file), or None where some
    annotation needs :func:`person_arrays_checked` (to name what is wrong). ``known``: the
    image ids (None: not checked here)."""
    n = len(anns)
    if not all(type(a) is dict and "keypoints" in a and type(a.get("image_id")) is int
               for a in anns):
        return None
    kps = number_lists([a["keypoints"] for a in anns], 3 * K) if n else np.zeros((0, 3 * K))
    image_ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    if kps is None or (known is not None and not set(image_ids.tolist()) <= known):
        return None
    kps = kps.reshape(n, K, 3)
    boxes = np.zeros((n, 4))
    with_box = [r for r, a in enumerate(anns) if "bbox" in a]
    if with_box:
        b = number_lists([anns[r]["bbox"] for r in with_box], 4)
        if b is None:
            return None
        boxes[with_box] = b
    vis = kps[:, :, 2] > 0
    derive = np.ones(n, dtype=bool)
    derive[with_box] = False
    derive &= vis.any(1)  # no bbox: the labelled keypoints' extent
    if derive.any():
        xy, v = kps[derive, :, :2], vis[derive, :, None]
        lo = np.where(v, xy, np.inf).min(1)
        hi = np.where(v, xy, -np.inf).max(1)
        boxes[derive] = np.concatenate([lo, hi - lo], 1)
    if np.abs(kps[..., :2]).max(initial=0) > MAX_COORDINATE or \
            np.abs(boxes).max(initial=0) > MAX_COORDINATE:
        return None
    if not all(type(a.get("area", 0)) in (int, float) and type(a.get("id", 0)) is int
               and type(a.get("iscrowd", 0)) in (int, bool) for a in anns):
        return None
    # PoseTrack has no 'area': use the box, as its own evaluation does.
    areas = np.array([float(a["area"]) if "area" in a else float(boxes[r, 2] * boxes[r, 3])
                      for r, a in enumerate(anns)])
    if not (np.isfinite(areas).all() and np.abs(areas).max(initial=0) <= MAX_AREA):
        return None
    if any(abs(a.get("id", 0)) >= 1 << 63 for a in anns):
        return None
    iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    ann_ids = np.array([int(a.get("id", r + 1)) for r, a in enumerate(anns, start)],
                       dtype=np.int64)
    return kps, boxes, areas.reshape(n), iscrowd.reshape(n), image_ids, ann_ids


def person_arrays_checked(anns: list[Any], path: Path, spec: KeypointSpec,
                         images: Collection[int]) -> tuple[np.ndarray, ...]:
    """:func:`person_arrays`'s arrays one annotation at a time, raising an
    :class:`InputError` that names the first bad annotation and field."""
    K, n = spec.num_keypoints, len(anns)
    kps = np.zeros((n, K, 3))
    boxes = np.zeros((n, 4))
    areas = np.zeros(n)
    iscrowd = np.zeros(n, dtype=bool)
    image_ids = np.zeros(n, dtype=np.int64)
    ann_ids = np.zeros(n, dtype=np.int64)
    for r, a in enumerate(anns):
        if type(a) is not dict:
            raise InputError(path, "must be an object", r)
        if "keypoints" not in a:
            raise InputError(path, "missing", r, "keypoints")
        kps[r] = keypoint_array(a["keypoints"], path, r, spec, "visibility", K)
        if "image_id" not in a:
            raise InputError(path, "missing", r, "image_id")
        image_ids[r] = integer(a["image_id"], path, r, "image_id")
        if image_ids[r] not in images:
            raise InputError(path, f"unknown image_id {image_ids[r]}", r, "image_id")
        ann_ids[r] = integer(a.get("id", r + 1), path, r, "id")
        crowd = a.get("iscrowd", 0)
        if type(crowd) not in (int, bool):
            raise InputError(path, f"must be 0 or 1, got {crowd!r:.40}", r, "iscrowd")
        iscrowd[r] = bool(crowd)
        if "bbox" in a:
            b = number_array(a["bbox"], path, r, "bbox")
            if b.size < 4:
                raise InputError(path, f"must have 4 values, got {b.size}", r, "bbox")
            boxes[r] = b[:4]
        else:
            vis = kps[r, :, 2] > 0
            if vis.any():
                lo, hi = kps[r, vis, :2].min(0), kps[r, vis, :2].max(0)
                boxes[r] = [*lo, *(hi - lo)]
        areas[r] = number(a["area"], path, r, "area") if "area" in a else \
            float(boxes[r, 2] * boxes[r, 3])
    return kps, boxes, areas, iscrowd, image_ids, ann_ids


def check_unique_ids(ann_ids: np.ndarray, path: Path) -> None:
    """Refuse a repeated annotation id: pycocotools indexes annotations by id, so it would
    evaluate against a different set of persons than this file lists."""
    ids, counts = np.unique(ann_ids, return_counts=True)
    if (counts > 1).any():
        dup = int(ids[counts > 1][0])
        first, again = np.flatnonzero(ann_ids == dup)[:2].tolist()
        raise InputError(path, f"duplicate annotation id {dup} (also entry {first}); every "
                         "annotation needs its own id (pycocotools keeps only one of them)",
                         again, "id")
