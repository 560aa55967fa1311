"""The refinement pipeline's stages, from detections and images to refined detections
(paper sections 3 and 6); :func:`run_pipeline` streams them.

1. **Images in, crops out** (:mod:`posefix.crops`, :mod:`posefix.images`): detections are
   grouped by image; a pool of loader threads loads one image (or one chunk of a crowded
   image) per item and crops its detections around their input poses.
2. **Batches** (:class:`BatchQueue`): the main process gathers crops into batches across
   images, in arrival order.
3. **Network** (:mod:`posefix.refiner`): each batch is refined and decoded by the refiner's
   :class:`~posefix.decoding.Decoding` (error gate, steps, hold, flip test).
4. **Back in the image** (:class:`ResultWriter`): coordinates go back to the image with
   the inverse affine matrix; the keypoint score column becomes the network's per-keypoint
   confidence; the person score stays the input's (``score="input"``), becomes the input
   score times the mean keypoint confidence of the refined pose (``score="heatmap"``), or,
   for a network with an error head, the input score times the mean probability that the
   input keypoints are right (``score="quality"``: a pose the network finds mostly wrong
   ranks lower). ``score="auto"`` (the default) is ``quality`` where the network has an
   error head, else ``input``. The decoding's score unless the options give one.
5. **OKS-NMS per image** (the decoding's threshold unless the options give one, default
   0.9; crop areas, the spec's used keypoints), as the
   reference does, ordered by the output score, once an image's last chunk is through.

Detections that cannot be refined keep their input keypoints and score, take no part in the
NMS and are counted: no keypoint inside the image (all zero or outside), and, with
``skip_missing``, a missing or unreadable image.

**Streaming.** At any time only the prefetched loader items and one batch are in memory,
whatever the number of detections: a chunk's crops are freed as soon as its last crop has
been through the network.

This module knows no network class: a refiner is anything with ``refine_batch(crops,
poses, areas)`` (``areas``: each crop's area in the image) or a callable ``(crops, poses)``,
and ``spec``, ``input_size`` and ``padding`` (:class:`posefix.refiner.Refiner`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .crops import CropDataset, CropTask, ImageSource, group_by_image, iterate_crops
from .decoding import Decoding
from .errors import InputError
from .geometry import apply_affine, invert_affine
from .io import Detections
from .options import RefineOptions
from .similarity import oks_nms
from .spec import KeypointSpec

__all__ = ["BatchQueue", "Chunk", "RefineCounts", "ResultWriter", "run_pipeline"]

@dataclass
class RefineCounts:
    """What happened to the detections of one :func:`refine_detections` call."""

    detections_in: int = 0
    images: int = 0
    refined: int = 0
    unchanged_no_keypoints: int = 0
    skipped_missing_image: int = 0
    skipped_unreadable_image: int = 0
    suppressed_nms: int = 0
    detections_out: int = 0
    image_size_mismatch: int = 0
    bad_images: list[str] = field(default_factory=list)  # missing or unreadable, with why

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


# --------------------------------------------------------------------------- stages
@dataclass
class Chunk:
    """One loaded chunk of an image's detections on its way through the network.

    ``rows`` are its refinable rows (into the detections); ``item`` the
    loader's output (``crops``, ``poses``, ``affine``, ``areas``); ``coords``/``conf`` (and
    ``error``) fill as its crops come out of the network, ``done`` of them so far.
    """

    task: CropTask
    item: dict[str, Any]
    rows: np.ndarray
    coords: np.ndarray
    conf: np.ndarray
    error: np.ndarray | None = None  # input-error probabilities, where the network gives them
    done: int = 0

    @property
    def finished(self) -> bool:
        """Every crop of the chunk has been through the network."""
        return self.done == len(self.rows)


class BatchQueue:
    """Chunks in, network batches of exactly ``batch_size`` crops across chunks, finished
    chunks out in arrival order.

    :meth:`put` runs every full batch the queued crops make and returns the chunks whose
    crops are all through (a chunk with no crop is finished at once, in its turn);
    :meth:`flush` runs the last, smaller batch and returns the rest. Crops are held only
    until their chunk is returned.
    """

    def __init__(self, refiner: Any, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.refiner = refiner
        self.batch_size = int(batch_size)
        self._queue: deque[Chunk] = deque()
        self._buffered = 0  # crops queued and not yet through the network

    def put(self, chunk: Chunk) -> list[Chunk]:
        """Queue a chunk; run the full batches; return the finished chunks."""
        self._queue.append(chunk)
        self._buffered += len(chunk.rows)
        finished = []
        while self._buffered >= self.batch_size:
            finished += self._run(self.batch_size)
        return finished + self._pop_finished()

    def flush(self) -> list[Chunk]:
        """Run what is left; return every remaining chunk."""
        finished = self._run(self._buffered) if self._buffered else []
        return finished + self._pop_finished()

    def _pop_finished(self) -> list[Chunk]:
        out = []
        while self._queue and self._queue[0].finished:
            out.append(self._queue.popleft())
        return out

    def _run(self, n: int) -> list[Chunk]:
        """Feed the first ``n`` queued crops through the network."""
        parts_c, parts_p, parts_a, where = [], [], [], []
        need = n
        for c in self._queue:
            if need == 0:
                break
            take = min(need, len(c.rows) - c.done)
            if take == 0:
                continue
            parts_c.append(c.item["crops"][c.done:c.done + take])
            parts_p.append(c.item["poses"][c.done:c.done + take])
            parts_a.append(c.item["areas"][c.done:c.done + take])
            where.append((c, c.done, take))
            need -= take
        crops = parts_c[0] if len(parts_c) == 1 else np.concatenate(parts_c)
        poses = parts_p[0] if len(parts_p) == 1 else np.concatenate(parts_p)
        batch = getattr(self.refiner, "refine_batch", None)
        out = (self.refiner(crops, poses) if batch is None  # a plain callable
               else batch(crops, poses, np.concatenate(parts_a)))
        coords, conf = out[0], out[1]
        error = out[2] if len(out) > 2 else None
        off = 0
        for c, start, take in where:
            c.coords[start:start + take] = coords[off:off + take]
            c.conf[start:start + take] = conf[off:off + take]
            if error is not None:
                if c.error is None:
                    c.error = np.zeros_like(c.conf)
                c.error[start:start + take] = error[off:off + take]
            c.done += take
            off += take
        self._buffered -= n
        return self._pop_finished()


class ResultWriter:
    """Finished chunks in, refined detections out: uncrops each chunk into the output
    arrays (and rescores it), and once an image's last chunk is in, runs OKS-NMS on it."""

    def __init__(self, dets: Detections, spec: KeypointSpec, score: str, nms: float,
                 counts: RefineCounts, owned: bool = False) -> None:
        self.dets = dets
        self.spec = spec
        self.score = score
        self.nms = nms
        self.counts = counts
        self.used = spec.used_mask
        self.sigmas = spec.sigma_array[self.used]
        # ``owned``: ``dets`` is the writer's to overwrite (no second copy of the poses).
        self.owned = owned
        self.keypoints = dets.keypoints if owned else dets.keypoints.copy()
        self.scores = dets.scores if owned else dets.scores.copy()
        self.keep = np.ones(len(dets), dtype=bool)
        self.refined = np.zeros(len(dets), dtype=bool)
        self.error: np.ndarray | None = None  # (M, K) input-error probabilities, NaN unrefined
        self._rows: list[np.ndarray] = []  # refined rows of the current image
        self._areas: list[np.ndarray] = []

    def add(self, chunk: Chunk) -> None:
        """Write one finished chunk back (and its crops are freed)."""
        if len(chunk.rows):
            m_inv = invert_affine(chunk.item["affine"])
            coords = apply_affine(chunk.coords, m_inv)
            self.keypoints[chunk.rows, :, :2] = coords
            self.keypoints[chunk.rows, :, 2] = chunk.conf
            self.scores[chunk.rows] = self._score(chunk)
            self.refined[chunk.rows] = True
            if chunk.error is not None:
                if self.error is None:
                    self.error = np.full(self.keypoints.shape[:2], np.nan)
                self.error[chunk.rows] = chunk.error
            self._rows.append(chunk.rows)
            self._areas.append(chunk.item["areas"])
            self.counts.refined += len(chunk.rows)
        chunk.item = {"affine": None}
        if chunk.task.last:
            self._finish_image()

    def _score(self, chunk: Chunk) -> np.ndarray:
        """The output person scores of a chunk's refined detections."""
        base = self.dets.scores[chunk.rows]
        score = self.score
        if score == "auto":
            score = "quality" if chunk.error is not None else "input"
        if score == "heatmap":
            return base * chunk.conf[:, self.used].mean(1)
        if score == "quality":
            if chunk.error is None:
                raise ValueError("score 'quality' needs a network with an error head")
            present = chunk.item["poses"][:, :, 2] > 0
            present &= self.used[None]
            right = ((1 - chunk.error) * present).sum(1) / np.maximum(present.sum(1), 1)
            return base * right
        return base

    def _finish_image(self) -> None:
        """OKS-NMS among the refined detections of the image just completed."""
        if not self._rows:
            return
        rows, areas = np.concatenate(self._rows), np.concatenate(self._areas)
        self._rows, self._areas = [], []
        if self.nms > 0 and len(rows) > 1:
            kept = oks_nms(self.keypoints[rows][:, self.used], self.scores[rows], areas,
                           self.sigmas, self.nms)
            drop = np.setdiff1d(np.arange(len(rows)), kept)
            self.keep[rows[drop]] = False
            self.counts.suppressed_nms += len(drop)

    def result(self) -> Detections:
        """The detections in the input's order, less the suppressed ones."""
        out = Detections(image_ids=self.dets.image_ids, keypoints=self.keypoints,
                         scores=self.scores, boxes=self.dets.boxes,
                         category_ids=self.dets.category_ids)
        if self.keep.all():
            return out
        rows = np.flatnonzero(self.keep)
        if self.owned:  # in place: no second copy
            return Detections(*(_compact(a, rows) for a in (
                out.image_ids, out.keypoints, out.scores, out.boxes, out.category_ids)))
        return out.select(rows)


def _compact(a: np.ndarray, rows: np.ndarray, block: int = 8192) -> np.ndarray:
    """``a[rows]`` for increasing ``rows``, moved to the front of ``a`` itself a block at a
    time (a row is read before any write reaches it): a view, no copy of ``a``."""
    for s in range(0, len(rows), block):
        e = min(len(rows), s + block)
        a[s:e] = a[rows[s:e]]
    return a[:len(rows)]


def _chunk(item: dict[str, Any], task: CropTask, num_keypoints: int, counts: RefineCounts,
           skip_missing: bool) -> Chunk:
    """The chunk of a loader item; an image that could not be read raises
    :class:`InputError`, or with ``skip_missing`` gives a chunk with nothing to refine."""
    if item["error"] is not None:
        where, message, missing = item["error"]
        if not skip_missing:
            raise InputError(where, message)
        if missing:
            counts.skipped_missing_image += len(task.rows)
        else:
            counts.skipped_unreadable_image += len(task.rows)
        if task.first:
            counts.bad_images.append(f"{where}: {message}")
        rows = np.zeros(0, dtype=np.int64)
        item = {"affine": np.zeros((0, 2, 3)), "areas": np.zeros(0)}
    else:
        counts.image_size_mismatch += int(task.first and item["size_mismatch"])
        rows = task.rows[item["refinable"]]
        counts.unchanged_no_keypoints += int((~item["refinable"]).sum())
    return Chunk(task, item, rows, np.zeros((len(rows), num_keypoints, 2)),
                 np.zeros((len(rows), num_keypoints)))


def run_pipeline(detections: Detections, images: ImageSource, refiner: Any,
                 options: RefineOptions, padding: float | None = None,
                 image_sizes: Mapping[int, tuple[int, int]] | None = None,
                 inplace: bool = False) -> ResultWriter:
    """Stream detections through crops, batches, the network and the writer.

    ``inplace`` lets the writer overwrite ``detections``' arrays (for a caller that no
    longer needs them: one copy of the poses in memory, not two). Detections are taken
    image by image in order of first appearance, but read and written in their own rows:
    a file not grouped by image costs no copy.

    Returns the finished :class:`ResultWriter`: its arrays hold every detection, row for
    row with ``detections``, refined or not; ``keep`` marks those OKS-NMS left.
    """
    spec = refiner.spec
    K = spec.num_keypoints
    if detections.keypoints.shape[1:] != (K, 3):
        raise ValueError(f"detections have {detections.keypoints.shape[1]} keypoints; the "
                         f"model's spec {spec.name} has {K}")
    counts = RefineCounts(detections_in=len(detections))
    tasks = group_by_image(detections.image_ids, max(options.batch_size, 64))
    counts.images = len({t.image_id for t in tasks})
    crops = CropDataset(tasks, detections.keypoints, detections.boxes, images,
                        dict(image_sizes or {}), spec, refiner.input_size,
                        float(padding if padding is not None else refiner.padding),
                        options.box, options.exif)
    queue = BatchQueue(refiner, options.batch_size)
    decoding = getattr(refiner, "decoding", Decoding()).changed(score=options.score,
                                                                nms=options.nms)
    writer = ResultWriter(detections, spec, decoding.score, decoding.nms, counts,
                          owned=inplace)
    bar = None
    if options.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(detections), unit="det", desc="refine", leave=False)
    for item in iterate_crops(crops, options.workers):
        task = tasks[item["task"]]
        for chunk in queue.put(_chunk(item, task, K, counts, options.skip_missing)):
            writer.add(chunk)
        if bar is not None:
            bar.update(len(task.rows))
    for chunk in queue.flush():
        writer.add(chunk)
    if bar is not None:
        bar.close()
    return writer
