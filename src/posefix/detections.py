"""Detections (COCO keypoint results) held as arrays, written as a COCO results file, and
the same-image pairs of two sets of rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .jsonfiles import round_like_python, write_json_list_atomic

__all__ = ["Detections", "same_image_pairs", "write_results"]


@dataclass
class Detections:
    """COCO keypoint results as arrays, one row per detected person.

    Attributes:
        image_ids: (M,) image id of each detection.
        keypoints: (M, K, 3) float64 ``x, y, score``.
        scores: (M,) person scores.
        boxes: (M, 4) ``x, y, w, h`` where the file gives a ``bbox``, else NaN.
        category_ids: (M,) category ids (1 for person).
    """

    image_ids: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    category_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def empty(cls, num_keypoints: int) -> Detections:
        """No detections."""
        return cls(
            image_ids=np.zeros(0, dtype=np.int64),
            keypoints=np.zeros((0, num_keypoints, 3)),
            scores=np.zeros(0),
            boxes=np.zeros((0, 4)),
            category_ids=np.zeros(0, dtype=np.int64),
        )

    def select(self, rows: np.ndarray) -> Detections:
        """A subset of rows (index array or boolean mask)."""
        return Detections(
            image_ids=self.image_ids[rows],
            keypoints=self.keypoints[rows],
            scores=self.scores[rows],
            boxes=self.boxes[rows],
            category_ids=self.category_ids[rows],
        )

    @classmethod
    def concatenate(cls, parts: list[Detections], num_keypoints: int) -> Detections:
        """Join several sets of detections."""
        if not parts:
            return cls.empty(num_keypoints)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("image_ids", "keypoints", "scores", "boxes", "category_ids")))

    def to_json(self) -> list[dict[str, Any]]:
        """COCO keypoint results (list of dicts): keypoints and boxes rounded to 4 decimals
        (as Python's ``round``), the score as it is; no ``bbox`` where the box is unknown."""
        return [e for chunk in self.json_chunks() for e in chunk]

    def json_chunks(self, rows: int = 8192, arrays: bool = False) -> Iterator[list[dict]]:
        """:meth:`to_json` in chunks of ``rows`` entries, rounded once for the whole array.

        With ``arrays`` the lists are numpy rows (for :func:`write_json_list_atomic`, which
        writes them as the same numbers without a Python float per value)."""
        n = len(self)
        has_box = np.isfinite(self.boxes).all(1)
        img, cat, score = (self.image_ids.tolist(), self.category_ids.tolist(),
                           self.scores.astype(np.float64).tolist())
        for s in range(0, n, rows):
            e = min(n, s + rows)
            k = round_like_python(self.keypoints[s:e].reshape(e - s, -1), 4)
            b = round_like_python(np.where(has_box[s:e, None], self.boxes[s:e], 0.0), 4)
            if not arrays:
                k, b = k.tolist(), b.tolist()
            chunk = []
            for i in range(s, e):
                entry = {"image_id": img[i], "category_id": cat[i], "keypoints": k[i - s],
                         "score": score[i]}
                if has_box[i]:
                    entry["bbox"] = b[i - s]
                chunk.append(entry)
            yield chunk


def write_results(path: str | Path, dets: Detections) -> Path:
    """Write detections as a COCO results file (the values of :meth:`Detections.to_json`)."""
    if not (np.isfinite(dets.keypoints).all() and np.isfinite(dets.scores).all()):
        raise ValueError(f"{path}: refusing to write NaN or infinite keypoints or scores")
    return write_json_list_atomic(path, dets.json_chunks(arrays=True))


def same_image_pairs(img_a: np.ndarray, img_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i, j) with ``img_a[i] == img_b[j]``, grouped by i, j ascending."""
    img_a, img_b = np.asarray(img_a), np.asarray(img_b)
    order = np.argsort(img_b, kind="stable")
    sorted_b = img_b[order]
    lo = np.searchsorted(sorted_b, img_a, side="left")
    hi = np.searchsorted(sorted_b, img_a, side="right")
    counts = hi - lo
    ia = np.repeat(np.arange(len(img_a)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ib = order[np.repeat(lo, counts) + offset]
    return ia, ib
