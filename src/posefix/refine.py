"""Refining any estimator's poses with a trained PoseFix network (paper sections 3 and 6).

For each detected person:

1. **Crop box.** ``box="pose"`` (the reference's test-time box): the extent of the input
   keypoints that score above 0 and lie inside the image, enlarged 1.2x about its centre,
   at least 20 px a side (:func:`posefix.geometry.box_from_keypoints`); ``box="bbox"``: the
   detection's own ``bbox`` (the pose box where a detection has none). Either box is grown
   to the network's aspect ratio and padded by ``config.data.bbox_padding`` (1.25).
2. **Crop and input pose.** The image region is warped to the network's input size; the
   input keypoints are mapped into crop pixels with the same affine matrix. Keypoints that
   are all-zero (``x = y = 0``), outside the image or outside the crop, and keypoints the
   spec ignores, are given to the network as absent.
3. **Predict.** The network draws the input pose as Gaussian heatmaps and predicts every
   keypoint in crop pixels with a confidence. With the flip test (on by default) the crop
   and the input pose are mirrored (left/right swapped with ``spec.flip_index``), predicted
   again, un-mirrored and averaged with the first prediction, as the reference does.
4. **Uncrop.** Coordinates go back to the image with the inverse affine matrix; the
   keypoint score column becomes the network's per-keypoint confidence.
5. **OKS-NMS** per image (threshold 0.9, crop areas, the spec's used keypoints), as the
   reference does, ordered by the output score: the input person score unchanged
   (``score="input"``, the default: it measured the higher AP) or the input score times the
   mean keypoint confidence of the refined pose (``score="heatmap"``).

Detections that cannot be refined keep their input keypoints and score, stay in the output,
take no part in the NMS and are counted: no keypoint inside the image (all zero or outside),
and, with ``skip_missing``, a missing or unreadable image.

**Streaming.** Detections are grouped by image; a ``torch.utils.data.DataLoader`` loads and
crops one image (or one chunk of a crowded image) per item in parallel workers, and the main
process gathers crops into batches across images. At any time only the prefetched items and
one batch are in memory, whatever the size of the results file.

**Images** are read with Pillow and converted to 8-bit RGB (grayscale, palette, CMYK,
16-bit and alpha images included). **EXIF orientation** (``exif="auto"``, the default):
the image is used in the frame whose size matches the ``width`` and ``height`` that the
image list gives for it -- COCO's sizes and annotations are those of the stored pixels
(annotated in 2014 browsers that ignored EXIF; the reference reads with
``cv2.IMREAD_IGNORE_ORIENTATION``), while tools that honour EXIF write the rotated size.
Where the sizes cannot tell (no size given, a square image, or an orientation that does not
swap the sides) the EXIF orientation is applied, as image viewers and ``cv2.imread`` do.
``exif="apply"`` or ``"ignore"`` forces one frame.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .geometry import (
    apply_affine,
    box_from_keypoints,
    crop_transforms,
    fix_aspect,
    invert_affine,
    warp_crop,
)
from .io import (
    Detections,
    GroundTruth,
    ImageInfo,
    InputError,
    load_ground_truth,
    load_results,
    read_json,
    resolve_image_path,
    write_json_atomic,
)
from .similarity import oks_nms
from .spec import KeypointSpec, load_spec

__all__ = [
    "DEFAULT_SCORE",
    "RefineCounts",
    "Refiner",
    "crop_detections",
    "format_summary",
    "load_image",
    "load_image_list",
    "refine",
    "refine_detections",
    "refine_files",
    "resolve_device",
]

#: Output person score unless told otherwise. Keeping the input score gave the higher AP
#: with the shipped demo model on the held-out images of ../shared/data (rescoring never
#: won there); ``python benchmarks/bench_refine.py --compare-scores CKPT`` measures it
#: (benchmarks/RESULTS.md, section "posefix refine").
DEFAULT_SCORE = "input"

_EXIF_ORIENTATION = 0x0112
_BOX_ENLARGE = 1.2
_BOX_MIN_SIZE = 20.0

Predictor = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
ImageSource = Mapping[int, "str | Path"] | Callable[[int], np.ndarray]


# --------------------------------------------------------------------------- images
def load_image(path: str | Path, exif: str = "auto",
               expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, in the frame its annotations use.

    Args:
        path: image file (any format Pillow reads: JPEG, PNG, ...).
        exif: ``"auto"``, ``"apply"`` or ``"ignore"`` the EXIF orientation tag (see the
            module documentation for ``"auto"``).
        expected_size: ``(width, height)`` from the image list, which ``"auto"`` uses to
            pick the frame; None or non-positive values: unknown.

    Raises:
        InputError: the file is missing or is not a readable image (the message names it).
    """
    if exif not in ("auto", "apply", "ignore"):
        raise ValueError(f"exif must be 'auto', 'apply' or 'ignore', got {exif!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            oriented = _orient(im, exif, expected_size)
            return _to_rgb(oriented)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def _orient(im: Image.Image, exif: str, expected_size: tuple[int, int] | None) -> Image.Image:
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    if exif == "ignore" or orientation not in range(2, 9):
        return im
    if exif == "auto" and expected_size is not None and min(expected_size) > 0:
        raw = tuple(im.size)
        turned = raw[::-1] if orientation in (5, 6, 7, 8) else raw
        want = tuple(int(v) for v in expected_size)
        if raw == want and turned != want:
            return im
    return ImageOps.exif_transpose(im)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=-1))
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA") else im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def load_image_list(path: str | Path) -> dict[int, ImageInfo]:
    """Image id -> :class:`ImageInfo` from a COCO annotation or image-info JSON (``images``)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(path, "an image list must be a JSON object with a list 'images'",
                         field_name="images")
    out: dict[int, ImageInfo] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            raise InputError(path, "must be an object", i, "images")
        for key in ("id", "file_name"):
            if key not in im:
                raise InputError(path, "missing", i, f"images.{key}")
        try:
            info = ImageInfo(int(im["id"]), str(im["file_name"]), int(im.get("width") or 0),
                             int(im.get("height") or 0))
        except (TypeError, ValueError):
            raise InputError(path, "id, width and height must be integers", i, "images") from None
        out[info.id] = info
    return out


# --------------------------------------------------------------------------- model wrapper
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Refiner:
    """A predictor with its crop size, spec, device and flip test: crops in, keypoints out.

    Args:
        predict: ``(images (B, 3, H, W) normalized float, input_pose (B, K, 3)) ->
            (coords (B, K, 2) crop pixels, confidence (B, K))``, e.g. ``PoseFixNet.predict``
            or an :class:`posefix.export.OnnxRefiner`.
        input_size: (height, width) of the crops.
        spec: keypoint layout (its ``flip_index`` un-mirrors the flipped prediction).
        device: where crops are normalized and ``predict`` is run.
        flip: average with the prediction on the mirrored crop.
    """

    def __init__(self, predict: Predictor, input_size: tuple[int, int], spec: KeypointSpec,
                 device: str | torch.device = "cpu", flip: bool = True) -> None:
        self.predict = predict
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.spec = spec
        self.device = resolve_device(device)
        self.flip = bool(flip)
        self._flip_index = torch.as_tensor(spec.flip_index, device=self.device)

    def prepare(self, crops: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network inputs: normalized crops (B or 2B, 3, H, W) and poses (B or 2B, K, 3).

        With the flip test the mirrored copies follow the originals in the same batch.
        """
        from .model import normalize

        x = torch.as_tensor(crops).to(self.device, non_blocking=True)
        p = torch.as_tensor(poses, dtype=torch.float32).to(self.device, non_blocking=True)
        x = normalize(x, channels_last=True).contiguous()
        if self.flip:
            w = self.input_size[1]
            fp = p[:, self._flip_index].clone()
            fp[..., 0] = w - 1 - fp[..., 0]
            x = torch.cat([x, torch.flip(x, dims=[3])])
            p = torch.cat([p, fp])
        return x, p

    def combine(self, coords: torch.Tensor, conf: torch.Tensor, n: int,
                ) -> tuple[np.ndarray, np.ndarray]:
        """Average the mirrored half of a prepared batch's predictions back in; to numpy."""
        coords = torch.as_tensor(coords).float()
        conf = torch.as_tensor(conf).float()
        if self.flip:
            fc = coords[n:][:, self._flip_index.to(coords.device)].clone()
            fc[..., 0] = self.input_size[1] - 1 - fc[..., 0]
            coords = (coords[:n] + fc) / 2
            conf = (conf[:n] + conf[n:][:, self._flip_index.to(conf.device)]) / 2
        return coords.double().cpu().numpy(), conf.double().cpu().numpy()

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor,
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Refine a batch: uint8 RGB crops (B, H, W, 3), input poses (B, K, 3) in crop pixels
        ``x, y, valid`` -> (coords (B, K, 2) in crop pixels, confidence (B, K))."""
        n = len(crops)
        x, p = self.prepare(crops, poses)
        coords, conf = self.predict(x, p)
        return self.combine(coords, conf, n)


def _as_refiner(model: Any, spec: KeypointSpec | None, input_size: tuple[int, int] | None,
                device: str | torch.device, flip: bool,
                ) -> tuple[Refiner, KeypointSpec, float | None]:
    """A :class:`Refiner` from a loaded checkpoint, a ``PoseFixNet``, a predictor object
    with ``predict`` or a plain callable; also the spec and the checkpoint's box padding."""
    padding = None
    if isinstance(model, Refiner):
        return model, model.spec, None
    if hasattr(model, "model") and hasattr(model, "config") and hasattr(model, "spec"):
        spec = spec if spec is not None else model.spec
        input_size = input_size or tuple(model.config.model.input_size)
        padding = float(model.config.data.bbox_padding)
        model = model.model
    if spec is None:
        spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("refine: a keypoint spec is needed (pass spec= or a loaded checkpoint)")
    spec = load_spec(spec)
    if input_size is None:
        input_size = getattr(model, "input_size", None)
    if input_size is None:
        raise ValueError("refine: the crop size is unknown (pass input_size=(h, w))")
    dev = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model = model.to(dev).eval()
        predict = model.predict if hasattr(model, "predict") else model
    elif hasattr(model, "session"):  # an OnnxRefiner: numpy in and out, on the CPU
        dev = torch.device("cpu")
        onnx_model = model

        def predict(x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            coords, conf = onnx_model(x.numpy(), p.numpy())
            return torch.from_numpy(coords), torch.from_numpy(conf)
    else:
        predict = model.predict if hasattr(model, "predict") else model
    if not callable(predict):
        raise TypeError(f"refine: cannot predict with a {type(model).__name__}")
    return Refiner(predict, tuple(input_size), spec, dev, flip), spec, padding


# --------------------------------------------------------------------------- cropping
@dataclass
class _Task:
    """One item of the loader: some detections of one image."""

    image_id: int
    rows: np.ndarray  # row indices into the (image-sorted) detections
    first: bool  # the first chunk of its image
    last: bool  # the last chunk of its image


class _CropDataset:
    """Map-style dataset: item i loads one image and crops its chunk of detections.

    Errors reading the image are returned, not raised, so that the main process can name
    the file in an :class:`InputError` or skip and count the detections.
    """

    def __init__(self, tasks: list[_Task], keypoints: np.ndarray, boxes: np.ndarray,
                 images: ImageSource, sizes: Mapping[int, tuple[int, int]],
                 spec: KeypointSpec, input_size: tuple[int, int], padding: float,
                 box: str, exif: str) -> None:
        self.tasks = tasks
        self.keypoints = keypoints
        self.boxes = boxes
        self.images = images
        self.sizes = sizes
        self.used = spec.used_mask
        self.input_size = input_size
        self.padding = padding
        self.box = box
        self.exif = exif

    def __len__(self) -> int:
        return len(self.tasks)

    def _read(self, image_id: int) -> np.ndarray:
        if callable(self.images) and not isinstance(self.images, Mapping):
            return np.asarray(self.images(image_id))
        return load_image(self.images[image_id], self.exif, self.sizes.get(image_id))

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.tasks[i]
        out: dict[str, Any] = {"task": i, "error": None}
        try:
            image = self._read(t.image_id)
        except InputError as e:
            out["error"] = (e.path, str(e)[len(e.path) + 2:], not Path(e.path).is_file())
            return out
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            out["error"] = (f"image {t.image_id}", "the loader must return (H, W, 3) uint8 "
                            f"RGB, got {image.shape} {image.dtype}", False)
            return out
        out.update(crop_detections(image, self.keypoints[t.rows], self.boxes[t.rows],
                                   self.used, self.input_size, self.padding, self.box))
        want = self.sizes.get(t.image_id)
        out["size_mismatch"] = bool(want is not None and min(want) > 0
                                    and tuple(want) != (image.shape[1], image.shape[0]))
        return out


def crop_detections(image: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray,
                    used: np.ndarray, input_size: tuple[int, int], padding: float = 1.25,
                    box: str = "pose") -> dict[str, np.ndarray]:
    """Crops and crop-pixel input poses of one image's detections.

    Args:
        image: (H, W, 3) uint8.
        keypoints: (n, K, 3) input ``x, y, score`` in image pixels.
        boxes: (n, 4) detection boxes ``x, y, w, h`` (NaN where absent), for ``box="bbox"``.
        used: (K,) keypoints the spec labels (others are given as absent).
        input_size: (height, width) of the crops.
        padding: box padding after the aspect fix.
        box: ``"pose"`` or ``"bbox"``.

    Returns:
        dict with ``crops`` (m, H, W, 3) uint8 and ``poses`` (m, K, 3) float32 for the
        ``refinable`` (n,) rows, ``affine`` (m, 2, 3) image -> crop, ``areas`` (m,) crop
        areas in image pixels.
    """
    h_img, w_img = image.shape[:2]
    kp = np.asarray(keypoints, dtype=np.float64)
    xy = kp[..., :2]
    present = (~np.all(xy == 0, axis=-1) & (xy[..., 0] >= 0) & (xy[..., 0] < w_img)
               & (xy[..., 1] >= 0) & (xy[..., 1] < h_img) & np.asarray(used, bool)[None])
    scored = present & (kp[..., 2] > 0)
    refinable = present.any(1)
    boxes_out = box_from_keypoints(xy, scored | (present & ~scored.any(1, keepdims=True)),
                                   enlarge=_BOX_ENLARGE, min_size=_BOX_MIN_SIZE)
    if box == "bbox":
        b = np.asarray(boxes, dtype=np.float64)
        good = np.all(np.isfinite(b), axis=1) & (b[:, 2] > 0) & (b[:, 3] > 0)
        boxes_out[good] = b[good]
    h_in, w_in = input_size
    centers, sizes = fix_aspect(boxes_out[refinable], w_in / h_in, padding)
    m = crop_transforms(centers, sizes, (h_in, w_in))
    pose = apply_affine(xy[refinable], m)
    inside = ((pose[..., 0] >= 0) & (pose[..., 0] <= w_in - 1) & (pose[..., 1] >= 0)
              & (pose[..., 1] <= h_in - 1))
    valid = present[refinable] & inside
    poses = np.concatenate([pose, valid[..., None]], axis=-1).astype(np.float32)
    crops = np.empty((len(m), h_in, w_in, 3), dtype=np.uint8)
    for j in range(len(m)):
        crops[j] = warp_crop(image, m[j], (h_in, w_in))
    return {"crops": crops, "poses": poses, "affine": m, "areas": sizes.prod(1),
            "refinable": refinable}


def _collate(item: dict[str, Any]) -> dict[str, Any]:
    return item


# --------------------------------------------------------------------------- the pipeline
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


@dataclass
class _Pending:
    """A loaded chunk waiting for (or partly through) the network."""

    task: _Task
    item: dict[str, Any]
    rows: np.ndarray  # refinable rows (into the sorted detections)
    coords: np.ndarray
    conf: np.ndarray
    done: int = 0


def _group_tasks(image_ids: np.ndarray, chunk: int) -> tuple[np.ndarray, list[_Task]]:
    """Stable order grouping rows by image (first-appearance order) and chunked tasks."""
    _, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")[inverse.reshape(-1)]
    order = np.argsort(rank, kind="stable")
    tasks: list[_Task] = []
    if len(order) == 0:
        return order, tasks
    sorted_ids = image_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        for c in range(s, e, chunk):
            tasks.append(_Task(int(sorted_ids[s]), np.arange(c, min(c + chunk, e)),
                               c == s, c + chunk >= e))
    return order, tasks


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
    if score not in ("input", "heatmap"):
        raise ValueError(f"score must be 'input' or 'heatmap', got {score!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    refiner, spec, ck_padding = _as_refiner(model, load_spec(spec) if spec is not None else None,
                                            input_size, device, flip)
    padding = float(padding if padding is not None else ck_padding or 1.25)
    K = spec.num_keypoints
    if detections.keypoints.shape[1:] != (K, 3):
        raise ValueError(f"detections have {detections.keypoints.shape[1]} keypoints; the "
                         f"model's spec {spec.name} has {K}")
    counts = RefineCounts(detections_in=len(detections))
    order, tasks = _group_tasks(detections.image_ids, max(batch_size, 64))
    dets = detections.select(order)
    counts.images = len({t.image_id for t in tasks})
    out_kp = dets.keypoints.copy()
    out_score = dets.scores.copy()
    keep = np.ones(len(dets), dtype=bool)
    dataset = _CropDataset(tasks, dets.keypoints, dets.boxes, images, dict(image_sizes or {}),
                           spec, refiner.input_size, padding, box, exif)
    used = spec.used_mask
    sigmas = spec.sigma_array[used]

    # Per image: refined rows, their areas, until the image's last chunk is through.
    image_rows: list[np.ndarray] = []
    image_areas: list[np.ndarray] = []

    def finish_image() -> None:
        if not image_rows:
            return
        rows = np.concatenate(image_rows)
        areas = np.concatenate(image_areas)
        image_rows.clear()
        image_areas.clear()
        if nms > 0 and len(rows) > 1:
            kept = oks_nms(out_kp[rows][:, used], out_score[rows], areas, sigmas, nms)
            drop = np.setdiff1d(np.arange(len(rows)), kept)
            keep[rows[drop]] = False
            counts.suppressed_nms += len(drop)

    def finish_chunk(p: _Pending) -> None:
        if len(p.rows):
            m_inv = invert_affine(p.item["affine"])
            out_kp[p.rows, :, :2] = apply_affine(p.coords, m_inv)
            out_kp[p.rows, :, 2] = p.conf
            if score == "heatmap":
                out_score[p.rows] = dets.scores[p.rows] * p.conf[:, used].mean(1)
            image_rows.append(p.rows)
            image_areas.append(p.item["areas"])
            counts.refined += len(p.rows)
        p.item = {"affine": None}  # free the crops
        if p.task.last:
            finish_image()

    queue: deque[_Pending] = deque()
    buffered = 0

    def run_batch(n: int) -> None:
        """Feed the first n buffered crops through the network, finish completed chunks."""
        nonlocal buffered
        parts_c, parts_p, where = [], [], []
        need = n
        for p in queue:
            if need == 0:
                break
            take = min(need, len(p.rows) - p.done)
            if take == 0:
                continue
            parts_c.append(p.item["crops"][p.done:p.done + take])
            parts_p.append(p.item["poses"][p.done:p.done + take])
            where.append((p, p.done, take))
            need -= take
        crops = parts_c[0] if len(parts_c) == 1 else np.concatenate(parts_c)
        poses = parts_p[0] if len(parts_p) == 1 else np.concatenate(parts_p)
        coords, conf = refiner(crops, poses)
        off = 0
        for p, start, take in where:
            p.coords[start:start + take] = coords[off:off + take]
            p.conf[start:start + take] = conf[off:off + take]
            p.done += take
            off += take
        buffered -= n
        while queue and queue[0].done == len(queue[0].rows):
            finish_chunk(queue.popleft())

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(dets), unit="det", desc="refine", leave=False)
    for item in _iterate(dataset, workers):
        t = tasks[item["task"]]
        if item["error"] is not None:
            where, message, missing = item["error"]
            if not skip_missing:
                raise InputError(where, message)
            if missing:
                counts.skipped_missing_image += len(t.rows)
            else:
                counts.skipped_unreadable_image += len(t.rows)
            if t.first:
                counts.bad_images.append(f"{where}: {message}")
            rows = np.zeros(0, dtype=np.int64)
            item = {"affine": np.zeros((0, 2, 3)), "areas": np.zeros(0)}
        else:
            counts.image_size_mismatch += int(t.first and item["size_mismatch"])
            rows = t.rows[item["refinable"]]
            counts.unchanged_no_keypoints += int((~item["refinable"]).sum())
        queue.append(_Pending(t, item, rows, np.zeros((len(rows), K, 2)), np.zeros((len(rows), K))))
        buffered += len(rows)
        while buffered >= batch_size:
            run_batch(batch_size)
        while queue and queue[0].done == len(queue[0].rows):
            finish_chunk(queue.popleft())
        if bar is not None:
            bar.update(len(t.rows))
    if buffered:
        run_batch(buffered)
    while queue:
        finish_chunk(queue.popleft())
    if bar is not None:
        bar.close()

    out = Detections(image_ids=dets.image_ids, keypoints=out_kp, scores=out_score,
                     boxes=dets.boxes, category_ids=dets.category_ids)
    # Back to the input's order (stable within images), less the suppressed poses.
    final = np.sort(order[keep])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    result = out.select(inverse[final]) if len(order) else out
    counts.detections_out = len(result)
    return result, counts


def _iterate(dataset: _CropDataset, workers: int) -> Iterator[dict[str, Any]]:
    if len(dataset) == 0:
        return iter(())
    if workers <= 0:
        return (dataset[i] for i in range(len(dataset)))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=min(workers, len(dataset)),
        collate_fn=_collate, prefetch_factor=2)
    # The DataLoader gives each worker one torch thread. Workers must not reconfigure
    # OpenCV's thread pool (cv2.setNumThreads): in a forked child whose parent has used
    # that pool, tearing it down waits forever on the parent's threads.
    return iter(loader)


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
        model: a loaded checkpoint (:func:`posefix.checkpoint.load_checkpoint`), a
            ``PoseFixNet``, a :class:`Refiner`, an object with ``predict(images, input_pose)``
            (e.g. :class:`posefix.export.OnnxRefiner`) or such a callable.
        spec: keypoint layout (default: the checkpoint's).
        input_size: crop (height, width) (default: the checkpoint's or ``model.input_size``).
        padding: box padding (default: the checkpoint's ``data.bbox_padding``, else 1.25).
        box: crop from the input pose (``"pose"``, the reference) or the ``bbox``.
        flip: flip test.
        score: ``"input"`` (default) keeps the input person score; ``"heatmap"``
            multiplies it by the mean keypoint confidence of the refined pose.
        nms: OKS-NMS threshold per image; ``<= 0`` disables it.
        batch_size: crops per forward pass (doubled by the flip test).
        workers: image loading and cropping processes (0: in this process).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ...
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


# --------------------------------------------------------------------------- files + CLI
def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _load_backend(checkpoint: str | Path | None, backend: str, onnx: str | Path | None,
                  tmp: Path, error_gate: float | None = None,
                  ) -> tuple[Any, KeypointSpec, float | None, str]:
    """(model object for :func:`refine`, spec, box padding, description); ``error_gate``
    replaces the checkpoint's."""
    from .checkpoint import default_checkpoint_path, load_checkpoint

    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if backend == "torch":
        ckpt = load_checkpoint(ckpt_path or default_checkpoint_path())
        if error_gate is not None:
            ckpt.model.set_error_gate(error_gate)
        return ckpt, ckpt.spec, float(ckpt.config.data.bbox_padding), f"torch {ckpt.path}"
    from .export import OnnxRefiner, export_onnx

    padding = None
    spec = None
    if ckpt_path is not None or onnx is None:
        ckpt = load_checkpoint(ckpt_path or default_checkpoint_path())
        padding, spec = float(ckpt.config.data.bbox_padding), ckpt.spec
        if onnx is None:
            onnx = export_onnx(ckpt.path, tmp / "refiner.onnx", error_gate=error_gate)
        elif error_gate is not None:
            raise InputError(onnx, "the error gate of an exported model is fixed; export "
                             "again with posefix export --error-gate")
    runner = OnnxRefiner(onnx)
    spec = spec or runner.spec
    if spec is None:
        raise InputError(onnx, "the ONNX file names no keypoint spec; pass --checkpoint too")
    return runner, spec, padding, f"onnxruntime {onnx}"


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
    if image_list is None and gt is None:
        raise InputError(results_p, "cannot map image ids to image files: pass --gt or "
                         "--image-list (a COCO JSON with 'images': id, file_name)")
    root = Path(images)
    if not root.is_dir():
        raise InputError(root, "image folder does not exist")
    list_path = Path(image_list if image_list is not None else gt)

    with tempfile.TemporaryDirectory(prefix="posefix-refine-") as tmp:
        model, spec, padding, backend_desc = _load_backend(checkpoint, backend, onnx, Path(tmp),
                                                           error_gate)
        truth = load_ground_truth(gt, spec=spec, image_root=root) if gt is not None else None
        infos = load_image_list(image_list) if image_list is not None else dict(truth.images)
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
        dev = resolve_device(device) if backend == "torch" else torch.device("cpu")
        show = progress if progress is not None else sys.stderr.isatty()
        start = time.perf_counter()
        refined, counts = refine_detections(
            dets, paths, model, spec, padding=padding, box=box, flip=flip, score=score,
            nms=nms, batch_size=batch_size, workers=workers, device=dev, image_sizes=sizes,
            exif=exif, skip_missing=skip_missing, progress=show)
        seconds = time.perf_counter() - start
    write_json_atomic(out_p, refined.to_json())

    summary: dict[str, Any] = {
        "results": str(results_p), "out": str(out_p), "backend": backend_desc,
        "device": str(dev), "spec": spec.name, "box": box, "flip": bool(flip), "score": score,
        "nms": float(nms), "batch_size": int(batch_size), "workers": int(workers),
        **counts.to_dict(), "seconds": round(seconds, 3),
        "detections_per_second": round(counts.detections_in / seconds, 2) if seconds else None,
    }
    if truth is not None:
        summary.update(_compare(truth, dets, refined))
    if report is not None:
        from .report import write_refine_report

        summary["report"] = str(write_refine_report(
            truth, dets, refined, report, images=paths, summary=summary, exif=exif)["index"])
    summary["text"] = format_summary(summary)
    return summary


# --------------------------------------------------------------------------- report
def _compare(truth: GroundTruth, before: Detections, after: Detections) -> dict[str, Any]:
    """AP and keypoint-error diagnosis of the input and the refined detections."""
    from .diagnosis import classify_keypoints
    from .evaluate import evaluate
    from .taxonomy import ERROR_TYPES

    out: dict[str, Any] = {"ap_before": evaluate(truth, before), "ap_after": evaluate(truth, after)}
    diag_b, diag_a = classify_keypoints(truth, before), classify_keypoints(truth, after)
    n = len(ERROR_TYPES)

    def counts(d: Any) -> dict[str, int]:
        lab = np.asarray(d.labels).reshape(-1)
        return {t: int((lab == c).sum()) for c, t in enumerate(ERROR_TYPES)}

    # Keypoints of ground-truth persons matched both before and after: type transitions.
    gb, ga = np.asarray(diag_b.gt_index), np.asarray(diag_a.gt_index)
    common, ib, ia = np.intersect1d(gb, ga, assume_unique=True, return_indices=True)
    lb, la = np.asarray(diag_b.labels)[ib], np.asarray(diag_a.labels)[ia]  # persons, K
    kp = np.broadcast_to(np.arange(lb.shape[1]), lb.shape)
    both = (lb >= 0) & (la >= 0)
    per_kp = np.zeros((lb.shape[1], n, n), dtype=np.int64)  # [keypoint][before][after]
    np.add.at(per_kp, (kp[both], lb[both], la[both]), 1)
    trans = per_kp.sum(0)
    good = ERROR_TYPES.index("good")
    out["errors_before"] = counts(diag_b)
    out["errors_after"] = counts(diag_a)
    out["matched_before"] = int(len(gb))
    out["matched_after"] = int(len(ga))
    # Mean OKS of the matched detections: finer than AP when there are few persons.
    out["mean_oks_before"] = float(np.mean(diag_b.oks)) if len(gb) else float("nan")
    out["mean_oks_after"] = float(np.mean(diag_a.oks)) if len(ga) else float("nan")
    out["error_changes"] = {
        "persons_compared": int(len(common)),
        "types": list(ERROR_TYPES),
        "transitions": trans.tolist(),  # [before type][after type], keypoint counts
        "per_keypoint": {name: per_kp[k].tolist() for k, name in enumerate(truth.spec.keypoints)},
        "fixed": {t: int(trans[c, good]) for c, t in enumerate(ERROR_TYPES) if c != good},
        "made": {t: int(trans[good, c]) for c, t in enumerate(ERROR_TYPES) if c != good},
    }
    return out


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
