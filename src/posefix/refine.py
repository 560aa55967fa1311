"""Refining any estimator's poses with a trained PoseFix network (paper sections 3 and 6).

The pipeline, stage by stage:

1. **Images in, crops out** (:mod:`posefix.crops`, :mod:`posefix.images`): detections are
   grouped by image; a ``torch.utils.data.DataLoader`` loads one image (or one chunk of a
   crowded image) per item in parallel workers and crops its detections around their input
   poses.
2. **Batches** (:class:`BatchQueue`): the main process gathers crops into batches across
   images, in arrival order.
3. **Network** (:mod:`posefix.refiner`): each batch is refined, with the flip test.
4. **Back in the image** (:class:`ResultWriter`): coordinates go back to the image with
   the inverse affine matrix; the keypoint score column becomes the network's per-keypoint
   confidence; the person score stays the input's (``score="input"``), becomes the input
   score times the mean keypoint confidence of the refined pose (``score="heatmap"``), or,
   for a network with an error head, the input score times the mean probability that the
   input keypoints are right (``score="quality"``: a pose the network finds mostly wrong
   ranks lower). ``score="auto"`` (the default) is ``quality`` where the network has an
   error head, else ``input``.
5. **OKS-NMS per image** (threshold 0.9, crop areas, the spec's used keypoints), as the
   reference does, ordered by the output score, once an image's last chunk is through.
6. **Results out**: in the input's order (grouped by image), less the suppressed poses.

Detections that cannot be refined keep their input keypoints and score, stay in the output,
take no part in the NMS and are counted: no keypoint inside the image (all zero or outside),
and, with ``skip_missing``, a missing or unreadable image.

**Streaming.** At any time only the prefetched loader items and one batch are in memory,
whatever the size of the results file: a chunk's crops are freed as soon as its last crop
has been through the network.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .comparison import compare_results
from .crops import (
    CropDataset,
    CropTask,
    ImageSource,
    crop_detections,
    group_by_image,
    iterate_crops,
)
from .geometry import apply_affine, invert_affine
from .images import load_image, load_image_list
from .io import (
    Detections,
    InputError,
    load_ground_truth,
    load_results,
    resolve_image_path,
    write_json_atomic,
)
from .refiner import Refiner, as_refiner, load_refiner, resolve_device
from .similarity import oks_nms
from .spec import KeypointSpec

__all__ = [
    "DEFAULT_SCORE",
    "SCORES",
    "BatchQueue",
    "RefineCounts",
    "Refiner",
    "ResultWriter",
    "crop_detections",
    "format_summary",
    "load_image",
    "load_image_list",
    "refine",
    "refine_detections",
    "refine_files",
    "resolve_device",
]

#: Output person score unless told otherwise: ``quality`` for a network with an error head
#: (the shipped demo model: it measured the higher AP on every input of the LSP test split,
#: recipes/demo/README.md), else the input's score (rescoring by heatmap confidence never won
#: on held-out images, ``python benchmarks/bench_refine.py --compare-scores CKPT``).
DEFAULT_SCORE = "auto"
SCORES = ("auto", "input", "heatmap", "quality")


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

    ``rows`` are its refinable rows (into the image-grouped detections); ``item`` the
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

    def __init__(self, refiner: Refiner, batch_size: int) -> None:
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
        parts_c, parts_p, where = [], [], []
        need = n
        for c in self._queue:
            if need == 0:
                break
            take = min(need, len(c.rows) - c.done)
            if take == 0:
                continue
            parts_c.append(c.item["crops"][c.done:c.done + take])
            parts_p.append(c.item["poses"][c.done:c.done + take])
            where.append((c, c.done, take))
            need -= take
        crops = parts_c[0] if len(parts_c) == 1 else np.concatenate(parts_c)
        poses = parts_p[0] if len(parts_p) == 1 else np.concatenate(parts_p)
        batch = getattr(self.refiner, "refine_batch", self.refiner)
        out = batch(crops, poses)
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
    arrays (and rescores it), and runs OKS-NMS on an image once its last chunk is in."""

    def __init__(self, dets: Detections, spec: KeypointSpec, score: str, nms: float,
                 counts: RefineCounts) -> None:
        self.dets = dets
        self.score = score
        self.nms = nms
        self.counts = counts
        self.used = spec.used_mask
        self.sigmas = spec.sigma_array[self.used]
        self.keypoints = dets.keypoints.copy()
        self.scores = dets.scores.copy()
        self.keep = np.ones(len(dets), dtype=bool)
        self._rows: list[np.ndarray] = []  # refined rows of the current image
        self._areas: list[np.ndarray] = []

    def add(self, chunk: Chunk) -> None:
        """Write one finished chunk back (and its crops are freed)."""
        if len(chunk.rows):
            m_inv = invert_affine(chunk.item["affine"])
            self.keypoints[chunk.rows, :, :2] = apply_affine(chunk.coords, m_inv)
            self.keypoints[chunk.rows, :, 2] = chunk.conf
            self.scores[chunk.rows] = self._score(chunk)
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

    def result(self, order: np.ndarray) -> Detections:
        """The detections in the input's order (``order`` grouped them by image), less the
        suppressed ones."""
        out = Detections(image_ids=self.dets.image_ids, keypoints=self.keypoints,
                         scores=self.scores, boxes=self.dets.boxes,
                         category_ids=self.dets.category_ids)
        if not len(order):
            return out
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return out.select(inverse[np.sort(order[self.keep])])


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


# --------------------------------------------------------------------------- the pipeline
def refine_detections(
    detections: Detections,
    images: ImageSource,
    model: Any,
    spec: KeypointSpec | str | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    padding: float | None = None,
    box: str = "pose",
    flip: bool = True,
    score: str = DEFAULT_SCORE,
    nms: float = 0.9,
    batch_size: int = 32,
    workers: int = 2,
    device: str | torch.device = "auto",
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    exif: str = "auto",
    skip_missing: bool = False,
    progress: bool = False,
) -> tuple[Detections, RefineCounts]:
    """Refine detections; also return what was refined, kept, skipped and suppressed.

    See :func:`refine` for the arguments. The output keeps the input's order (grouped by
    image in order of first appearance), less the poses that OKS-NMS suppressed.
    """
    if box not in ("pose", "bbox"):
        raise ValueError(f"box must be 'pose' or 'bbox', got {box!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    refiner = as_refiner(model, spec, input_size, device, flip)
    spec = refiner.spec
    padding = float(padding if padding is not None else refiner.padding)
    K = spec.num_keypoints
    if detections.keypoints.shape[1:] != (K, 3):
        raise ValueError(f"detections have {detections.keypoints.shape[1]} keypoints; the "
                         f"model's spec {spec.name} has {K}")
    counts = RefineCounts(detections_in=len(detections))
    order, tasks = group_by_image(detections.image_ids, max(batch_size, 64))
    dets = detections.select(order)
    counts.images = len({t.image_id for t in tasks})
    crops = CropDataset(tasks, dets.keypoints, dets.boxes, images, dict(image_sizes or {}),
                        spec, refiner.input_size, padding, box, exif)
    queue = BatchQueue(refiner, batch_size)
    writer = ResultWriter(dets, spec, score, nms, counts)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(dets), unit="det", desc="refine", leave=False)
    for item in iterate_crops(crops, workers):
        task = tasks[item["task"]]
        for chunk in queue.put(_chunk(item, task, K, counts, skip_missing)):
            writer.add(chunk)
        if bar is not None:
            bar.update(len(task.rows))
    for chunk in queue.flush():
        writer.add(chunk)
    if bar is not None:
        bar.close()
    result = writer.result(order)
    counts.detections_out = len(result)
    return result, counts


def refine(
    detections: Detections,
    images: ImageSource,
    model: Any,
    spec: KeypointSpec | str | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    padding: float | None = None,
    box: str = "pose",
    flip: bool = True,
    score: str = DEFAULT_SCORE,
    nms: float = 0.9,
    batch_size: int = 32,
    workers: int = 2,
    device: str | torch.device = "auto",
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    exif: str = "auto",
    skip_missing: bool = False,
    progress: bool = False,
) -> Detections:
    """Refine any estimator's detections with a PoseFix network.

    Args:
        detections: input poses (one row per person), in the model's keypoint layout.
        images: image id -> image file, or a loader ``image_id -> (H, W, 3) uint8 RGB``.
        model: a :class:`Refiner` (``Refiner.from_checkpoint()``, ``Refiner.from_onnx(...)``:
            it carries its spec, crop size, padding, device and flip test), a loaded
            checkpoint (:func:`posefix.checkpoint.load_checkpoint`), an
            :class:`posefix.export.OnnxRefiner`, or a bare network (``PoseFixNet``), an object
            with ``predict(images, input_pose)`` or such a callable (:func:`as_refiner`).
        spec: keypoint layout (default: the refiner's or checkpoint's).
        input_size: crop (height, width), for a bare network without ``input_size``.
        padding: box padding (default: the refiner's, i.e. the checkpoint's
            ``data.bbox_padding``, else 1.25).
        box: crop from the input pose (``"pose"``, the reference) or the ``bbox``.
        flip: flip test (for what is not already a :class:`Refiner`).
        score: ``"input"`` keeps the input person score; ``"heatmap"`` multiplies it by
            the mean keypoint confidence of the refined pose; ``"quality"`` (needs an error
            head) by the mean probability that the input keypoints are right; ``"auto"``
            (default): ``quality`` where the network has an error head, else ``input``.
        nms: OKS-NMS threshold per image; ``<= 0`` disables it.
        batch_size: crops per forward pass (doubled by the flip test).
        workers: image loading and cropping processes (0: in this process).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ... (for what is
            not already a :class:`Refiner`).
        image_sizes: image id -> (width, height) from the image list, for EXIF ``"auto"``.
        exif: ``"auto"``, ``"apply"`` or ``"ignore"`` the EXIF orientation.
        skip_missing: keep the detections of missing or unreadable images unchanged (and
            count them) instead of raising :class:`InputError`.
        progress: show a progress bar.

    Returns:
        The refined detections (unrefinable ones unchanged), less OKS-NMS suppressions.
    """
    out, _ = refine_detections(
        detections, images, model, spec, input_size=input_size, padding=padding, box=box,
        flip=flip, score=score, nms=nms, batch_size=batch_size, workers=workers, device=device,
        image_sizes=image_sizes, exif=exif, skip_missing=skip_missing, progress=progress)
    return out


# --------------------------------------------------------------------------- files
def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refine_files(
    checkpoint: str | Path | None,
    images: str | Path,
    results: str | Path,
    out: str | Path,
    gt: str | Path | None = None,
    image_list: str | Path | None = None,
    box: str = "pose",
    flip: bool = True,
    score: str = DEFAULT_SCORE,
    nms: float = 0.9,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "auto",
    backend: str = "torch",
    onnx: str | Path | None = None,
    skip_missing: bool = False,
    strict: bool = False,
    *,
    exif: str = "auto",
    progress: bool | None = None,
    report: str | Path | None = None,
    error_gate: float | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Refine a COCO keypoint results file into another (``posefix refine``).

    Image ids map to files through ``image_list`` (a COCO annotation or image-info JSON
    with ``images``: ``id``, ``file_name``, ``width``, ``height``) or else ``gt``; one of
    them is required (file names are relative to ``images``). With ``gt`` the summary has
    the AP and the keypoint-error diagnosis before and after refinement.

    Args:
        checkpoint: trained checkpoint (None: the shipped demo model).
        images: image folder.
        results: input results JSON (any estimator's, in the model's keypoint layout).
        out: output results JSON, written atomically; must not be an input file.
        gt: COCO keypoint annotations, for the image list and the before/after report.
        image_list: image-id -> file mapping (default: ``gt``).
        box, flip, score, nms, batch_size, workers, device, exif, skip_missing: see
            :func:`refine`.
        backend: ``"torch"`` or ``"onnxruntime"``.
        onnx: the ONNX file for ``onnxruntime`` (default: export ``checkpoint`` to a
            temporary file).
        strict: detections of images not in the image list are an error (default:
            skipped with a warning).
        progress: progress bar (default: when stderr is a terminal).
        error_gate: keep every input keypoint whose probability of being a gross error
            (the network's error head) is below this; 0 refines every keypoint (default:
            the checkpoint's ``model.error_gate``).
        report: with ``gt``, write the before/after figures, ``report.md`` and
            ``index.html`` into this folder (:func:`posefix.report.write_refine_report`).
        split: with ``gt``, only its images whose ``split`` field has this value (e.g.
            LSP's ``test``): the detections of other images are skipped.

    Returns:
        The summary: counts, settings, timing, ``ap_before``/``ap_after`` and
        ``errors_before``/``errors_after``/``error_changes`` and
        ``mean_oks_before``/``mean_oks_after`` (of the detections matched to a person) with
        ``gt``, and ``text`` (a readable report).
    """
    import sys

    results_p, out_p = Path(results), Path(out)
    for name, p in (("results", results), ("gt", gt), ("image list", image_list),
                    ("checkpoint", checkpoint), ("onnx", onnx)):
        if p is not None and _same_file(out_p, Path(p)):
            raise InputError(out_p, f"refusing to write over the input {name} file; "
                             "choose another --out")
    if out_p.is_dir():
        raise InputError(out_p, "is a folder; --out must be a file path")
    if report is not None and gt is None:
        raise InputError(Path(report), "a report needs the ground truth: pass --gt")
    if split is not None and gt is None:
        raise InputError(results_p, f"split {split!r} selects images of the ground truth: "
                         "pass --gt")
    if image_list is None and gt is None:
        raise InputError(results_p, "cannot map image ids to image files: pass --gt or "
                         "--image-list (a COCO JSON with 'images': id, file_name)")
    root = Path(images)
    if not root.is_dir():
        raise InputError(root, "image folder does not exist")
    list_path = Path(image_list if image_list is not None else gt)

    refiner = load_refiner(checkpoint, backend, onnx, device=device, flip=flip,
                           error_gate=error_gate)
    spec = refiner.spec
    truth = load_ground_truth(gt, spec=spec, image_root=root, split=split) \
        if gt is not None else None
    infos = load_image_list(image_list) if image_list is not None else dict(truth.images)
    if split is not None:
        infos = {i: infos[i] for i in truth.images if i in infos}
    dets = load_results(results_p, spec, image_ids=infos, strict=strict)

    paths: dict[int, Path] = {}
    missing = []
    for image_id in np.unique(dets.image_ids).tolist():
        p = resolve_image_path(root, infos[image_id].file_name, source=list_path,
                               must_exist=False)
        paths[image_id] = p
        if not p.is_file():
            missing.append(p)
    if missing and not skip_missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(missing[0], f"image does not exist{more}; image ids map to files "
                         f"through {list_path} (use --skip-missing to keep their "
                         "detections unrefined)")
    sizes = {i: (infos[i].width, infos[i].height) for i in paths}
    show = progress if progress is not None else sys.stderr.isatty()
    start = time.perf_counter()
    refined, counts = refine_detections(
        dets, paths, refiner, box=box, score=score, nms=nms, batch_size=batch_size,
        workers=workers, image_sizes=sizes, exif=exif, skip_missing=skip_missing,
        progress=show)
    seconds = time.perf_counter() - start
    write_json_atomic(out_p, refined.to_json())

    summary: dict[str, Any] = {
        "results": str(results_p), "out": str(out_p), "backend": refiner.description,
        "device": str(refiner.device), "spec": spec.name, "box": box, "flip": bool(flip),
        "score": score, "nms": float(nms), "batch_size": int(batch_size), "workers": int(workers),
        **counts.to_dict(), "seconds": round(seconds, 3),
        "detections_per_second": round(counts.detections_in / seconds, 2) if seconds else None,
    }
    if truth is not None:
        summary.update(compare_results(truth, dets, refined))
    if report is not None:
        from .report import write_refine_report

        summary["report"] = str(write_refine_report(
            truth, dets, refined, report, images=paths, summary=summary, exif=exif)["index"])
    summary["text"] = format_summary(summary)
    return summary


# --------------------------------------------------------------------------- report
def format_summary(s: Mapping[str, Any]) -> str:
    """The readable report of :func:`refine_files`' summary."""
    lines = [
        f"refined {s['results']} -> {s['out']}",
        f"  {s['detections_in']} detections in {s['images']} images; refined {s['refined']}, "
        f"unchanged {s['unchanged_no_keypoints']} (no keypoint inside the image)",
    ]
    if s["skipped_missing_image"] or s["skipped_unreadable_image"]:
        lines.append(f"  skipped (kept unrefined): {s['skipped_missing_image']} on missing "
                     f"images, {s['skipped_unreadable_image']} on unreadable images")
        lines += [f"    {b}" for b in s["bad_images"][:5]]
        if len(s["bad_images"]) > 5:
            lines.append(f"    ... and {len(s['bad_images']) - 5} more")
    if s["image_size_mismatch"]:
        lines.append(f"  warning: {s['image_size_mismatch']} image(s) differ in size from "
                     "the image list")
    nms = f"OKS-NMS {s['nms']:g} suppressed {s['suppressed_nms']}" if s["nms"] > 0 else "no NMS"
    lines.append(f"  {nms}; wrote {s['detections_out']} detections")
    rate = s.get("detections_per_second")
    lines.append(f"  {s['backend']} on {s['device']}, box from {s['box']}, flip test "
                 f"{'on' if s['flip'] else 'off'}, score {s['score']}: {s['seconds']:.1f} s"
                 + (f" ({rate:.1f} detections/s)" if rate else ""))
    if "ap_before" in s:
        b, a = s["ap_before"], s["ap_after"]
        lines += ["", f"  {'':<6} {'before':>7} {'after':>7} {'change':>7}"]
        for k in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
            if b[k] < 0 or a[k] < 0:
                lines.append(f"  {k:<6} {'-':>7} {'-':>7} {'':>7}")
            else:
                lines.append(f"  {k:<6} {100 * b[k]:7.1f} {100 * a[k]:7.1f} "
                             f"{100 * (a[k] - b[k]):+7.1f}")
        eb, ea, ch = s["errors_before"], s["errors_after"], s["error_changes"]
        lines += ["", f"  keypoints of matched persons ({s['matched_before']} before, "
                  f"{s['matched_after']} after; {ch['persons_compared']} in both):",
                  f"  {'type':<10} {'before':>7} {'after':>7} {'fixed':>7} {'made':>7}"]
        for t in ch["types"]:
            fixed = ch["fixed"].get(t, "")
            made = ch["made"].get(t, "")
            lines.append(f"  {t:<10} {eb[t]:>7} {ea[t]:>7} {fixed!s:>7} {made!s:>7}")
        lines.append("  (fixed: the type before, good after; made: good before, the type after)")
    return "\n".join(lines)
