"""What a :class:`~posefix.refiner.Refiner` gives back for images held in memory:
:class:`RefinedPoses`, the refined poses of one image row for row with the input persons,
and :class:`RefinedPerson`, one of them. They draw themselves (:meth:`RefinedPoses.plot`,
with :mod:`posefix.visualize`) and give COCO results (:meth:`RefinedPoses.to_coco`,
:meth:`RefinedPoses.save`, with :mod:`posefix.io`'s writer)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import Detections
from .spec import KeypointSpec

__all__ = ["RefinedPerson", "RefinedPoses", "checked_image"]


@dataclass(frozen=True, repr=False)
class RefinedPerson:
    """One person of a :class:`RefinedPoses` (``poses[i]``).

    Attributes:
        keypoints: (K, 3) refined ``x, y, confidence`` in image pixels.
        score: the output person score.
        error: (K,) the probability that each *input* keypoint is a gross error, or None.
        kept: False where OKS-NMS suppressed the person.
        refined: whether the person went through the network.
        input: (K, 3) the input keypoints, as given (a third column of 1 added to ``x, y``).
    """

    keypoints: np.ndarray
    score: float
    error: np.ndarray | None
    kept: bool
    refined: bool
    input: np.ndarray

    def __repr__(self) -> str:
        err = "" if self.error is None or not self.refined else \
            f", max error {np.nanmax(self.error):.2f}"
        state = ("refined" if self.refined else "not refined") + \
            ("" if self.kept else ", removed by OKS-NMS")
        return f"RefinedPerson(score {self.score:.3f}, {state}{err})"


@dataclass(repr=False)
class RefinedPoses:
    """The refined poses of one image, row for row with the input persons.

    ``len(poses)`` persons; ``poses[i]`` is one (:class:`RefinedPerson`), iterating gives
    each; ``poses[mask]`` (a slice, boolean mask or index array) the rows it selects, e.g.
    ``poses[poses.kept]``. :meth:`plot` draws them, :meth:`to_coco` and :meth:`save` give
    them as COCO keypoint results (as ``posefix refine`` writes them).

    Attributes:
        keypoints: (N, K, 3) ``x, y, confidence`` in image pixels; a person with no keypoint
            inside the image keeps its input keypoints (and ``refined`` is False).
        scores: (N,) output person scores (see ``score`` of :meth:`Refiner.refine_images`).
        error: (N, K) the network's probability that each *input* keypoint is a gross error
            (NaN for unrefined persons); None for a network without an error head.
        kept: (N,) False where OKS-NMS suppressed the person (the file path drops those).
        refined: (N,) whether the person went through the network.
        inputs: (N, K, 3) the input keypoints (``x, y, score``), for the moved-keypoint
            marks of :meth:`plot`; None where not known.
        boxes: (N, 4) ``x, y, w, h`` input boxes, NaN where none was given (written as
            COCO's ``bbox`` where known); None: none.
        spec: the keypoint layout (for :meth:`plot`), None where not known.
        image: the image refined, as given (a reference, not a copy: :meth:`plot` draws on
            it by default), or None.
        color: ``"rgb"`` or ``"bgr"``, the channel order of ``image``.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    error: np.ndarray | None
    kept: np.ndarray
    refined: np.ndarray
    inputs: np.ndarray | None = None
    boxes: np.ndarray | None = None
    spec: KeypointSpec | None = None
    image: np.ndarray | None = None
    color: str = "rgb"

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: Any) -> Any:
        """``poses[i]``: a :class:`RefinedPerson`; a slice, boolean mask or index array:
        the :class:`RefinedPoses` of those rows (with the same image)."""
        if isinstance(index, (int, np.integer)):
            i = range(len(self))[index]  # negative indices, and an IndexError past the end
            return RefinedPerson(self.keypoints[i], float(self.scores[i]),
                                 None if self.error is None else self.error[i],
                                 bool(self.kept[i]), bool(self.refined[i]),
                                 self._inputs()[i])
        rows = np.arange(len(self))[index]
        error, inputs, boxes = (None if a is None else a[rows]
                                for a in (self.error, self.inputs, self.boxes))
        return RefinedPoses(self.keypoints[rows], self.scores[rows], error, self.kept[rows],
                            self.refined[rows], inputs, boxes, self.spec, self.image,
                            self.color)

    def __iter__(self) -> Iterator[RefinedPerson]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        n, k = self.keypoints.shape[:2] if self.keypoints.ndim == 3 else (len(self), 0)
        scores = " ".join(f"{s:.3f}" for s in self.scores[:6].tolist())
        more = " ..." if n > 6 else ""
        return (f"RefinedPoses({n} person{'' if n == 1 else 's'} x {k} keypoints, "
                f"{int(self.refined.sum())} refined, {int(self.kept.sum())} kept; "
                f"scores [{scores}{more}])")

    def _inputs(self) -> np.ndarray:
        return self.inputs if self.inputs is not None else np.full_like(self.keypoints, np.nan)

    def _detections(self, image_id: int, rows: np.ndarray) -> Detections:
        n = len(rows)
        boxes = np.full((n, 4), np.nan) if self.boxes is None else self.boxes[rows]
        return Detections(np.full(n, int(image_id), dtype=np.int64), self.keypoints[rows],
                          self.scores[rows], boxes, np.ones(n, dtype=np.int64))

    def to_coco(self, image_id: int, *, removed: bool = False) -> list[dict[str, Any]]:
        """COCO keypoint results of the kept persons (``removed``: every person), as
        ``posefix refine`` writes them (:meth:`posefix.io.Detections.to_json`: keypoints
        and boxes rounded to 4 decimals, ``bbox`` where the input gave one), with
        ``image_id`` and category 1."""
        rows = np.arange(len(self)) if removed else np.flatnonzero(self.kept)
        return self._detections(image_id, rows).to_json()

    def save(self, path: str | Path, image_id: int, *, removed: bool = False) -> Path:
        """Write :meth:`to_coco` as a COCO results file, atomically
        (:func:`posefix.io.write_results`, the writer of ``posefix refine``)."""
        from .io import write_results

        rows = np.arange(len(self)) if removed else np.flatnonzero(self.kept)
        return write_results(path, self._detections(image_id, rows))

    def plot(self, image: np.ndarray | None = None, *, show_input: bool = False,
             color: str | None = None, scores: bool = True) -> np.ndarray:
        """The refined poses drawn on the image (:mod:`posefix.visualize`).

        Without ``show_input``: the image at its size with each kept person's refined pose
        (left side blue, right orange, centre green) and, with ``scores``, its score above
        it. With ``show_input``: two labelled panels side by side, as ``posefix demo``
        draws them, the input poses and the refined ones, each moved keypoint marked by a
        magenta line from its input position (a ring) and the persons OKS-NMS removed grey.

        Args:
            image: (H, W, 3) uint8 to draw on; None: the image refined (:attr:`image`).
            show_input: draw the input panel and the moved-keypoint marks.
            color: ``"rgb"`` or ``"bgr"``, the channel order of ``image`` and of the
                result (None: :attr:`color` for the image refined, else ``"rgb"``).
            scores: write each person's score above its pose.

        Returns:
            The drawn image, (H, W, 3) uint8 (wider with ``show_input``), in ``color``.
        """
        from .visualize import Panel, draw_panel, render_panels

        if image is None and self.image is None:
            raise ValueError("plot: these poses keep no image; pass plot(image)")
        if self.spec is None:
            raise ValueError("plot: these poses carry no keypoint spec")
        color = color or (self.color if image is None else "rgb")
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
        picture = checked_image(self.image if image is None else image, 0, color)
        kept = np.asarray(self.kept, dtype=bool)
        if not show_input:
            out = draw_panel(picture, Panel("refined", self.keypoints[kept],
                                            self.scores[kept] if scores else None), self.spec)
        else:
            from .comparison import moved_keypoints

            inputs = self._inputs()
            rows = np.arange(len(self))
            moved, _ = moved_keypoints(_pose_rows(inputs), self._detections(0, rows),
                                       self.spec.used_mask)
            origins = np.where(moved[..., None], inputs[..., :2], np.nan)
            panels = [Panel("input", inputs, None),
                      Panel("refined", self.keypoints[kept],
                            self.scores[kept] if scores else None, origins=origins[kept],
                            removed=self.keypoints[~kept])]
            out = render_panels(picture, panels, self.spec, max_side=None)
        return np.ascontiguousarray(out[..., ::-1]) if color == "bgr" else out


def _pose_rows(keypoints: np.ndarray) -> Detections:
    """(N, K, 3) poses as :class:`Detections` of one image."""
    n = len(keypoints)
    return Detections(np.zeros(n, dtype=np.int64), keypoints, np.ones(n),
                      np.full((n, 4), np.nan), np.ones(n, dtype=np.int64))


def checked_image(image: np.ndarray, index: int, color: str) -> np.ndarray:
    """An in-memory image as (H, W, 3) uint8 RGB."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"image {index}: must be (H, W, 3) uint8, got {a.shape} {a.dtype}")
    return np.ascontiguousarray(a[..., ::-1]) if color == "bgr" else a
