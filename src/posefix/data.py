"""Top-down training and validation samples from COCO-format keypoint sets (paper sections 3-4).

Every person with at least one labelled keypoint (crowd regions skipped) becomes one sample:
its box is sanitised, grown to the crop's aspect ratio and padded (1.25); the crop is
augmented (scale, rotation, horizontal flip); the *input pose* is synthesized on the fly
from the ground truth in image coordinates (:func:`posefix.synthesis.synthesize`, with the
persons overlapping it feeding swap errors) and mapped into the crop with the same affine
as the image. Sets whose layout differs from the model's are converted by keypoint name, so
keypoints the source does not have are simply unlabelled.

Samples are a pure function of ``(seed, epoch, index)``: the sampler yields ``(epoch,
index)`` keys (:class:`ResumableSampler`), so a resumed run sees the same data and
augmentation as an uninterrupted one, whatever the number of workers. Every sample is drawn
exactly once per epoch across all processes (no padding, the last smaller step trained).

At COCO scale (150,000 persons) the persons are numpy arrays and the image paths one byte
buffer (:class:`StringArray`), so forked DataLoader workers share them with the main process
instead of copying them: reading a Python object per person or image would write its
reference count, and so copy its memory page into the worker, and so would a garbage
collection walking the objects the worker inherited (:func:`worker_init` freezes them).
"""

from __future__ import annotations

import gc
import operator
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from .augment import Elastic, Photometric
from .config import Config, ConfigError, DatasetConfig
from .errors import InputError
from .geometry import (
    apply_affine,
    box_from_keypoints,
    crop_transforms,
    fix_aspect,
    sanitize_boxes,
    warp_crop,
)
from .imagenet import normalize
from .io import GroundTruth, images_of_split, load_ground_truth, load_results
from .profile import load_profile
from .spec import KeypointSpec, convert_layout, load_spec
from .synthesis import estimates_for, overlap_index, synthesize

__all__ = [
    "PersonTable",
    "PoseFixDataset",
    "SampleOptions",
    "ResumableSampler",
    "StringArray",
    "build_dataset",
    "load_persons",
    "worker_init",
]

_TRAIN, _VAL = 0, 1  # first word of the RNG seed of training and validation samples


class StringArray(Sequence[str]):
    """A read-only sequence of strings packed into one numpy byte buffer.

    ``array[i]`` builds a new ``str``. A list of strings read by a forked DataLoader worker
    gets its items' reference counts written, which copies every memory page they live on
    into the worker; this buffer is only read, so its pages stay shared.
    """

    def __init__(self, items: Iterable[str] = ()) -> None:
        encoded = [os.fsencode(s) for s in items]
        self._ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = operator.index(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} strings")
        start = int(self._ends[i - 1]) if i else 0
        return os.fsdecode(self._data[start:int(self._ends[i])].tobytes())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"StringArray({list(self[:3])}{' ...' if len(self) > 3 else ''}, n={len(self)})"


@dataclass
class PersonTable:
    """The persons of one or more keypoint sets, in one layout, as arrays (one row each).

    Attributes:
        spec: the layout of ``keypoints`` (the model's).
        keypoints: (N, K, 3) ground truth ``x, y, v`` in image pixels.
        boxes: (N, 4) sanitised boxes ``x, y, w, h``.
        areas: (N,) areas (OKS scale of the synthesized errors).
        image_index: (N,) index into ``image_paths``.
        image_paths: one absolute path per image (a :class:`StringArray`).
        image_ids: (N,) image ids in their own set.
        ann_ids: (N,) annotation ids in their own set.
        source: (N,) index of the set (into ``gts``) each person comes from.
        others_ptr, others_kp, others_area: keypoints (in ``spec``) and areas of the
            persons overlapping each person (:func:`posefix.synthesis.overlap_index`), in
            CSR form: person ``i``'s are rows ``others_ptr[i]:others_ptr[i + 1]``.
        estimated: (N, K, 3) an estimator's pose matched to each person (``v`` = 1 where
            present), or None; synthesis uses it for unlabelled keypoints.
        gts: each set's ground truth converted to ``spec`` (restricted to its split), for
            evaluation.
    """

    spec: KeypointSpec
    keypoints: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    image_index: np.ndarray
    image_paths: Sequence[str]
    image_ids: np.ndarray
    ann_ids: np.ndarray
    source: np.ndarray
    others_ptr: np.ndarray
    others_kp: np.ndarray
    others_area: np.ndarray
    estimated: np.ndarray | None
    gts: list[GroundTruth]

    def __len__(self) -> int:
        return len(self.keypoints)

    def others(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (M, K, 3) and areas (M,) of the persons overlapping person ``row``."""
        a, b = self.others_ptr[row], self.others_ptr[row + 1]
        return self.others_kp[a:b], self.others_area[a:b]


def _image_sizes(gt: GroundTruth, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Width and height of the image of each entry of ``image_ids``, read from the file
    where the JSON lacks them."""
    uniq, inverse = np.unique(image_ids, return_inverse=True)
    size = np.zeros((len(uniq), 2))
    for i, img in enumerate(uniq):
        info = gt.images[int(img)]
        if info.width > 0 and info.height > 0:
            size[i] = info.width, info.height
        else:
            from PIL import Image

            with Image.open(gt.image_path(int(img))) as im:
                size[i] = im.size
    return size[inverse, 0], size[inverse, 1]


def load_persons(datasets: Sequence[DatasetConfig], spec: KeypointSpec | str,
                 overlap_iou: float = 0.1) -> PersonTable:
    """Load the persons of COCO-format keypoint sets into one :class:`PersonTable`.

    Each set's layout is read from its ``spec`` or inferred from its categories and
    converted to ``spec`` by keypoint name; ``image_files`` restricts a set to a split.
    Crowd regions, persons with no labelled keypoint (after conversion) and degenerate
    boxes are skipped.
    """
    spec = load_spec(spec)
    keys = ("keypoints", "boxes", "areas", "image_index", "image_ids", "ann_ids", "source",
            "estimated", "others_count", "others_kp", "others_area")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    paths: list[str] = []
    gts: list[GroundTruth] = []
    any_estimates = any(ds.results for ds in datasets)
    for s, ds in enumerate(datasets):
        gt, converted = _load_set(ds, spec)
        gts.append(converted)
        if len(gt):
            _add_persons(parts, paths, s, ds, gt, converted, overlap_iou, any_estimates)
    return _person_table(parts, paths, gts, spec, any_estimates)


def _named_image_ids(gt: GroundTruth, names: Sequence[str], ann: Path | str,
                     option: str) -> set[int]:
    """The ids of the images ``names`` (file names) of ``gt``; a name it lacks is refused."""
    by_name = {im.file_name: im.id for im in gt.images.values()}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise InputError(ann, f"{option} not in this set: {unknown[:5]}", field_name="images")
    return {by_name[f] for f in names}


def _load_set(ds: DatasetConfig, spec: KeypointSpec) -> tuple[GroundTruth, GroundTruth]:
    """One set's ground truth of its split or image files, as in its file and converted
    to ``spec`` (with its ignored keypoints unlabelled)."""
    gt = load_ground_truth(ds.ann, spec=ds.spec, image_root=ds.images)
    if not (spec.mapping_from(gt.spec) >= 0).any():
        raise ConfigError(f"{ds.ann}: layout {gt.spec.name} shares no keypoint name with "
                          f"{spec.name}")
    images = gt.images
    if ds.split is not None:
        images = images_of_split(images, ds.split, ds.ann)
    if ds.image_files is not None:
        keep_ids = _named_image_ids(gt, ds.image_files, ds.ann, "image_files")
        images = {k: v for k, v in images.items() if k in keep_ids}
    if ds.exclude_image_files:
        drop_ids = _named_image_ids(gt, ds.exclude_image_files, ds.ann, "exclude_image_files")
        images = {k: v for k, v in images.items() if k not in drop_ids}
    in_split = np.isin(gt.image_ids, np.fromiter(images, dtype=np.int64, count=len(images)))
    gt = gt.subset(np.flatnonzero(in_split), image_ids=images.keys())
    kp = convert_layout(gt.keypoints, gt.spec, spec, zero_ignored=True)
    for name in ds.ignore_keypoints:
        try:
            kp[:, spec.index(name), 2] = 0
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{ds.ann}: ignore_keypoints: {name!r} is not a keypoint of "
                              f"{spec.name}") from e
    converted = GroundTruth(
        spec=spec, images=gt.images, image_ids=gt.image_ids, ann_ids=gt.ann_ids,
        keypoints=kp, boxes=gt.boxes, areas=gt.areas, iscrowd=gt.iscrowd, path=gt.path,
        image_root=gt.image_root)
    return gt, converted


def _add_persons(parts: dict[str, list[np.ndarray]], paths: list[str], source: int,
                 ds: DatasetConfig, gt: GroundTruth, converted: GroundTruth,
                 overlap_iou: float, any_estimates: bool) -> None:
    """Append one set's trainable persons (not crowd, a labelled keypoint, a box) to
    ``parts``, their images to ``paths``."""
    kp = converted.keypoints
    w, h = _image_sizes(gt, gt.image_ids)
    boxes, ok = sanitize_boxes(gt.boxes, w, h)
    rows = np.flatnonzero(ok & ~gt.iscrowd & ((kp[..., 2] > 0).sum(-1) > 0) & (gt.areas > 0))
    if len(rows) == 0:
        return
    img_ids = gt.image_ids[rows]
    uniq, inverse = np.unique(img_ids, return_inverse=True)
    parts["image_index"].append(inverse + len(paths))
    paths.extend(str(gt.image_path(int(i))) for i in uniq)
    parts["keypoints"].append(kp[rows])
    parts["boxes"].append(boxes[rows])
    parts["areas"].append(gt.areas[rows])
    parts["image_ids"].append(img_ids)
    parts["ann_ids"].append(gt.ann_ids[rows])
    parts["source"].append(np.full(len(rows), source, dtype=np.int64))
    others = overlap_index(converted, rows, overlap_iou)  # (n, M) gt rows, -1 padded
    have = others >= 0
    parts["others_count"].append(have.sum(1))
    parts["others_kp"].append(kp[others[have]])
    parts["others_area"].append(gt.areas[others[have]])
    if any_estimates:
        est = np.zeros((len(rows), gt.spec.num_keypoints, 3))
        if ds.results:
            dets = load_results(ds.results, gt.spec, image_ids=gt.images.keys())
            est = estimates_for(gt, dets, rows, iou=overlap_iou)
        parts["estimated"].append(convert_layout(est, gt.spec, converted.spec, zero_ignored=True))


def _person_table(parts: dict[str, list[np.ndarray]], paths: list[str],
                  gts: list[GroundTruth], spec: KeypointSpec,
                  any_estimates: bool) -> PersonTable:
    """The :class:`PersonTable` of the persons of every set."""
    K = spec.num_keypoints
    empty = {"keypoints": np.zeros((0, K, 3)), "boxes": np.zeros((0, 4)),
             "estimated": np.zeros((0, K, 3)), "others_kp": np.zeros((0, K, 3)),
             "areas": np.zeros(0), "others_area": np.zeros(0)}
    cat = {k: np.concatenate(v) if v else empty.get(k, np.zeros(0, dtype=np.int64))
           for k, v in parts.items()}
    ptr = np.concatenate([[0], np.cumsum(cat["others_count"])]).astype(np.int64)
    return PersonTable(
        spec=spec, keypoints=cat["keypoints"], boxes=cat["boxes"], areas=cat["areas"],
        image_index=cat["image_index"].astype(np.int64), image_paths=StringArray(paths),
        image_ids=cat["image_ids"].astype(np.int64), ann_ids=cat["ann_ids"].astype(np.int64),
        source=cat["source"].astype(np.int64), others_ptr=ptr, others_kp=cat["others_kp"],
        others_area=cat["others_area"],
        estimated=cat["estimated"] if any_estimates else None, gts=gts,
    )


def worker_init(worker_id: int) -> None:
    """DataLoader worker setup: one thread each for OpenCV and torch (workers are processes);
    the objects inherited from the main process frozen out of garbage collection (walking
    them would write to, and so copy, every page they live on; :func:`gc.freeze` itself
    only relinks two list heads)."""
    gc.freeze()
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


@dataclass(frozen=True)
class SampleOptions:
    """How :class:`PoseFixDataset` makes samples, validated once (the config's ``data``
    section gives them for training: :meth:`from_config`).

    Attributes:
        seed: the random seed of the synthesized inputs and augmentation.
        profile: error profile (name, file or :class:`posefix.profile.ErrorProfile`).
        bbox_padding: box padding of the crop.
        scale_factor, rotation_factor, rotation_prob, flip: geometric augmentation
            (training only).
        repeat: passes over the persons per epoch (training only).
        cache_images: decoded images kept in memory per process (0: none).
        float_images: float32 normalized crops instead of uint8.
        crop_from: ``gt``, ``pose`` or ``auto`` (see :class:`PoseFixDataset`).
        photometric, elastic: appearance and elastic augmentation (training only; None:
            none).
    """

    seed: int = 0
    profile: Any = "default"
    bbox_padding: float = 1.25
    scale_factor: float = 0.3
    rotation_factor: float = 40.0
    rotation_prob: float = 0.6
    flip: bool = True
    repeat: int = 1
    cache_images: int = 0
    float_images: bool = False
    crop_from: str = "auto"
    photometric: Photometric | None = None
    elastic: Elastic | None = None

    def __post_init__(self) -> None:
        if self.crop_from not in ("auto", "gt", "pose"):
            raise ValueError(f"crop_from must be auto, gt or pose, got {self.crop_from!r}")

    @classmethod
    def from_config(cls, cfg: Config, split: str = "train") -> SampleOptions:
        """The options of a config's training (``split="train"``) or validation samples."""
        d = cfg.data
        return cls(seed=cfg.run.seed, profile=d.profile, bbox_padding=d.bbox_padding,
                   scale_factor=d.scale_factor, rotation_factor=d.rotation_factor,
                   rotation_prob=d.rotation_prob, flip=d.flip, repeat=d.repeat,
                   cache_images=d.cache_images,
                   crop_from=d.crop_from if split == "train" else "pose",
                   photometric=Photometric(d.color_jitter, d.blur_prob, d.gray_prob,
                                           d.erase_prob),
                   elastic=Elastic(d.elastic, d.elastic_prob))


class PoseFixDataset(Dataset):
    """Crops, synthesized input poses and targets of a :class:`PersonTable`.

    ``dataset[(epoch, index)]`` (or ``dataset[index]`` for epoch 0) returns a dict:

    * ``image``: (3, H, W) uint8 RGB crop, to be normalized on the device with
      :func:`posefix.imagenet.normalize` (a quarter of the bytes to move; float32 normalized
      with ``float_images=True``);
    * ``input_pose``: (K, 3) float32 ``x, y, valid`` in crop pixels (valid: synthesized and
      inside the crop);
    * ``target``: (K, 2) float32 ground truth in crop pixels (zeros where not valid);
    * ``target_valid``: (K,) bool: labelled, inside the crop and not an ignored keypoint;
    * ``meta``: ``person`` (table row), ``source``, ``image_id``, ``ann_id``, ``flipped``,
      ``affine`` (2, 3) float64 image->crop, ``types`` (K,) int8 error types of the
      synthesized keypoints, ``input_image`` (K, 3) the input pose in image pixels.

    Training samples (``train=True``) are augmented and keyed by ``(epoch, index)``;
    validation samples are not augmented and their input depends on ``(seed, index)``
    only; ``options`` (:class:`SampleOptions`) say how. Its ``photometric`` (training only)
    changes the crop's appearance (:class:`posefix.augment.Photometric`) and ``elastic``
    (training only) bends the crop and its keypoints (:class:`posefix.augment.Elastic`).
    ``crop_from``: ``gt`` crops around the ground-truth box, ``pose`` around the
    input pose's extent as :mod:`posefix.refine` does; ``auto``: gt for training, pose
    for validation (a pose with fewer than two keypoints falls back to the gt box).
    """

    def __init__(self, table: PersonTable, input_size: tuple[int, int], *, train: bool,
                 options: SampleOptions | None = None) -> None:
        o = options if options is not None else SampleOptions()
        self.table = table
        self.spec = table.spec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.train = train
        self.seed = int(o.seed)
        self.profile = load_profile(o.profile) if isinstance(o.profile, (str, Path)) \
            else o.profile
        self.bbox_padding = o.bbox_padding
        self.scale_factor = o.scale_factor if train else 0.0
        self.rotation_factor = o.rotation_factor if train else 0.0
        self.rotation_prob = o.rotation_prob if train else 0.0
        self.flip = o.flip and train
        self.repeat = int(o.repeat) if train else 1
        self.cache_images = int(o.cache_images)
        self.float_images = bool(o.float_images)
        self.crop_from = ("gt" if train else "pose") if o.crop_from == "auto" else o.crop_from
        self.photometric = o.photometric if train and o.photometric is not None \
            else Photometric()
        self.elastic = o.elastic if train and o.elastic is not None else Elastic()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        h, w = self.input_size
        self.centers, self.sizes = fix_aspect(table.boxes, w / h, o.bbox_padding)

    def __len__(self) -> int:
        return len(self.table) * self.repeat

    def _image(self, index: int) -> np.ndarray:
        """Decoded BGR image (cached per worker when ``cache_images`` > 0)."""
        img = self._cache.get(index)
        if img is not None:
            self._cache.move_to_end(index)
            return img
        path = self.table.image_paths[index]
        img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise InputError(path, "cannot read this image")
        if self.cache_images > 0:
            self._cache[index] = img
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return img

    def _rng(self, epoch: int, index: int) -> np.random.Generator:
        if self.train:
            return np.random.default_rng([_TRAIN, self.seed, epoch, index])
        return np.random.default_rng([_VAL, self.seed, index])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        epoch, index = int(epoch), int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        t = self.table
        row = index % len(t)
        rng = self._rng(epoch, index)
        gt = t.keypoints[row]
        others, others_area = t.others(row)
        est = t.estimated[row][None] if t.estimated is not None else None
        pose, types = synthesize(gt[None], t.areas[row:row + 1], self.spec, self.profile, rng,
                                 others[None], est, others_areas=others_area[None])
        pose, types = pose[0], types[0]
        h, w = self.input_size

        center, size = self.centers[row], self.sizes[row]
        if self.crop_from == "pose" and (pose[:, 2] > 0).sum() >= 2:
            c, s = fix_aspect(box_from_keypoints(pose[None], pose[None, :, 2] > 0), w / h,
                              self.bbox_padding)
            center, size = c[0], s[0]
        scale, rotation, flipped = 1.0, 0.0, False
        if self.train:
            sf, rf = self.scale_factor, self.rotation_factor
            scale = float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
            r = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))
            rotation = r if rng.random() < self.rotation_prob else 0.0
            flipped = bool(self.flip and rng.random() < 0.5)
        m = crop_transforms(center, size * scale, self.input_size, rotation)[0]
        if flipped:  # mirror the crop: x -> w - 1 - x, composed into the one warp
            m = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])

        crop = warp_crop(self._image(int(t.image_index[row])), m, self.input_size)
        pts = apply_affine(np.stack([gt[:, :2], pose[:, :2]]), np.stack([m, m]))
        crop, pts = self.elastic(crop, pts, rng)
        crop = self.photometric(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), rng)

        inside = ((pts[..., 0] >= 0) & (pts[..., 0] < w) & (pts[..., 1] >= 0)
                  & (pts[..., 1] < h))
        target_valid = (gt[:, 2] > 0) & inside[0] & self.spec.used_mask
        input_valid = (pose[:, 2] > 0) & inside[1]
        target = np.where(target_valid[:, None], pts[0], 0.0)
        input_pose = np.concatenate([np.where(input_valid[:, None], pts[1], 0.0),
                                     input_valid[:, None]], axis=1)
        if flipped:
            perm = self.spec.flip_index
            target, target_valid = target[perm], target_valid[perm]
            input_pose, types = input_pose[perm], types[perm]
        image = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        return {
            "image": normalize(image) if self.float_images else image,
            "input_pose": torch.from_numpy(input_pose.astype(np.float32)),
            "target": torch.from_numpy(target.astype(np.float32)),
            "target_valid": torch.from_numpy(target_valid),
            "meta": {
                "person": row,
                "source": int(t.source[row]),
                "image_id": int(t.image_ids[row]),
                "ann_id": int(t.ann_ids[row]),
                "flipped": flipped,
                "affine": torch.from_numpy(m),
                "types": torch.from_numpy(np.asarray(types, dtype=np.int8)),
                "input_image": torch.from_numpy(pose.astype(np.float64)),
            },
        }


def build_dataset(cfg: Config, split: str = "train", table: PersonTable | None = None,
                  **options: Any) -> PoseFixDataset:
    """The training (``split="train"``) or validation dataset of a config.

    ``table`` replaces the split's persons; ``options`` replace fields of its
    :class:`SampleOptions` (:meth:`SampleOptions.from_config`).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    d = cfg.data
    if table is None:
        table = load_persons(d.train if split == "train" else d.val, d.spec, d.overlap_iou)
    return PoseFixDataset(table, cfg.model.input_size, train=split == "train",
                          options=replace(SampleOptions.from_config(cfg, split), **options))


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` that yields ``(epoch, index)`` keys, draws every index
    exactly once per epoch across the processes, and can resume.

    The per-epoch order is DistributedSampler's (``torch.randperm`` seeded by ``seed +
    epoch``) and process ``rank`` takes every ``num_replicas``-th index of it, as there, but
    nothing is padded: where the length is not a multiple of ``num_replicas`` the first ranks
    get one index more (DistributedSampler repeats indices instead). ``start`` skips the
    first ``start`` indices of the epoch's order *across all processes* (those a resumed run
    has already trained on), so a run resumes exactly, even with another number of
    processes. Training takes the order in steps of ``batch`` indices per process
    (:meth:`steps`, :meth:`step_share`); only the last step of an epoch can be smaller, and
    in it a process can get none. Call :meth:`set_epoch` every epoch as usual.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, start: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.total_size = len(self.dataset)  # type: ignore[arg-type]  # no padding
        self.set_start(start)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of the current epoch's order (all processes)."""
        self.start = int(start)
        self.num_samples = len(range(self.start + self.rank, self.total_size,
                                     self.num_replicas))

    def order(self) -> np.ndarray:
        """The current epoch's order of all indices (every process computes the same)."""
        if not self.shuffle:
            return np.arange(self.total_size)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.total_size, generator=g).numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        for i in self.order()[self.start + self.rank::self.num_replicas].tolist():
            yield (self.epoch, i)

    def __len__(self) -> int:
        return self.num_samples

    def steps(self, batch: int) -> int:
        """Steps of ``batch`` indices per process left in the epoch from ``start`` (the last
        one possibly smaller)."""
        return -(-(self.total_size - self.start) // (batch * self.num_replicas))

    def step_share(self, step: int, batch: int) -> tuple[int, int]:
        """``(this process's, all processes')`` number of indices in step ``step`` (counted
        from ``start``) of ``batch`` indices per process."""
        size = batch * self.num_replicas
        first = min(self.start + step * size, self.total_size)
        total = min(size, self.total_size - first)
        return len(range(self.rank, total, self.num_replicas)), total
