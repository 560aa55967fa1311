"""Crops for refinement: detections grouped by image, each image loaded once and its
detections cropped around their input poses (paper section 3), in loader workers.

1. **Crop box.** ``box="pose"`` (the reference's test-time box): the extent of the input
   keypoints that score above 0 and lie inside the image, enlarged 1.2x about its centre,
   at least 20 px a side (:func:`posefix.geometry.box_from_keypoints`); ``box="bbox"``: the
   detection's own ``bbox`` (the pose box where a detection has none). Either box is grown
   to the network's aspect ratio and padded by the training ``bbox_padding`` (1.25).
2. **Crop and input pose.** The image region is warped to the network's input size; the
   input keypoints are mapped into crop pixels with the same affine matrix. Keypoints that
   are all-zero (``x = y = 0``), outside the image or outside the crop, and keypoints the
   spec ignores, are given to the network as absent.
3. **Loading** (:func:`iterate_crops`): in a pool of threads (image decoding and warping
   release the GIL), a few items ahead of the network, in order; no torch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .geometry import apply_affine, box_from_keypoints, crop_transforms, fix_aspect, warp_crop
from .imagenet import normalize_array
from .images import load_image
from .spec import KeypointSpec

__all__ = ["CropDataset", "CropTask", "ImageSource", "crop_detections", "group_by_image",
           "iterate_crops", "network_inputs"]

_BOX_ENLARGE = 1.2
_BOX_MIN_SIZE = 20.0

#: Where images come from: image id -> file, or a loader ``image_id -> (H, W, 3) uint8 RGB``.
ImageSource = Mapping[int, "str | Path"] | Callable[[int], np.ndarray]


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


def network_inputs(crops: np.ndarray, poses: np.ndarray, flip_index: np.ndarray | None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """What the network is fed for a batch of crops: ImageNet-normalized crops (B or 2B, 3,
    H, W) float32 and input poses (B or 2B, K, 3) float32, from uint8 RGB crops (B, H, W, 3)
    and crop-pixel poses. With a ``flip_index`` (the flip test) the mirrored crops and
    poses (left/right exchanged) follow the originals in the same batch."""
    x = normalize_array(np.asarray(crops))
    p = np.asarray(poses, dtype=np.float32)
    if flip_index is not None:
        fp = p[:, np.asarray(flip_index)]
        fp[..., 0] = x.shape[3] - 1 - fp[..., 0]
        x = np.concatenate([x, x[..., ::-1]])
        p = np.concatenate([p, fp])
    return x, p


@dataclass
class CropTask:
    """One item of the loader: some detections (a chunk) of one image."""

    image_id: int
    rows: np.ndarray  # row indices into the detections (in the input's order)
    first: bool  # the first chunk of its image
    last: bool  # the last chunk of its image


def group_by_image(image_ids: np.ndarray, chunk: int) -> list[CropTask]:
    """The loader's tasks: each image's detections (images in order of first appearance,
    a stable order within each), in chunks of at most ``chunk``; their ``rows`` index the
    detections as they are (nothing needs to be copied into the grouped order)."""
    _, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")[inverse.reshape(-1)]
    order = np.argsort(rank, kind="stable")
    tasks: list[CropTask] = []
    if len(order) == 0:
        return tasks
    sorted_ids = image_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        for c in range(s, e, chunk):
            tasks.append(CropTask(int(sorted_ids[s]), order[c:min(c + chunk, e)],
                               c == s, c + chunk >= e))
    return tasks


class CropDataset:
    """Map-style dataset: item i loads one image and crops its chunk of detections.

    Errors reading the image are returned, not raised, so that the main process can name
    the file in an :class:`InputError` or skip and count the detections.
    """

    def __init__(self, tasks: list[CropTask], keypoints: np.ndarray, boxes: np.ndarray,
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


def iterate_crops(dataset: CropDataset, workers: int, ahead: int = 2) -> Iterator[dict[str, Any]]:
    """The dataset's items in order, loaded by ``workers`` threads (0: in this one), at most
    ``ahead`` items per thread loaded before they are asked for."""
    if workers <= 0:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    pool = ThreadPoolExecutor(min(workers, max(len(dataset), 1)), "posefix-crops")
    pending: deque[Future[dict[str, Any]]] = deque()
    todo = iter(range(len(dataset)))
    try:
        for i in todo:
            pending.append(pool.submit(dataset.__getitem__, i))
            if len(pending) >= workers * ahead:
                break
        while pending:
            item = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(dataset.__getitem__, nxt))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
