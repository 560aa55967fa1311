"""Reading and validating COCO keypoint annotations and results; atomic writes.

Ground truth and results are held as arrays (one row per person) so that every later
stage can vectorize. Bad input raises :class:`InputError` naming the file, the entry and
the field; nothing is written unless a whole output is ready (:func:`write_json_atomic`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .spec import KeypointSpec, load_spec

__all__ = [
    "Detections",
    "atomic_write",
    "GroundTruth",
    "ImageInfo",
    "InputError",
    "convert_mpii",
    "images_of_split",
    "load_ground_truth",
    "load_results",
    "new_file_mode",
    "read_json",
    "resolve_image_path",
    "same_image_pairs",
    "write_json_atomic",
]


class InputError(ValueError):
    """Bad input: the message names the file, the entry index and the field."""

    def __init__(self, path: str | Path, message: str, index: int | None = None,
                 field_name: str | None = None) -> None:
        where = str(path)
        if index is not None:
            where += f": entry {index}"
        if field_name is not None:
            where += f": field '{field_name}'"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.index = index
        self.field = field_name


@dataclass(frozen=True)
class ImageInfo:
    """One image of a dataset."""

    id: int
    file_name: str
    width: int
    height: int
    split: str | None = None  # the file's own ``images[].split`` (e.g. LSP's train/test)


@dataclass
class GroundTruth:
    """COCO keypoint ground truth as arrays, one row per person annotation.

    Attributes:
        spec: keypoint layout.
        images: image id -> :class:`ImageInfo`.
        image_ids: (N,) image id of each person.
        ann_ids: (N,) annotation ids.
        keypoints: (N, K, 3) float64 ``x, y, v``.
        boxes: (N, 4) ``x, y, w, h``.
        areas: (N,) areas (from the box where the file has none).
        iscrowd: (N,) bool.
        path: the file it came from (for messages), or None.
        image_root: folder that image file names are relative to.
    """

    spec: KeypointSpec
    images: dict[int, ImageInfo]
    image_ids: np.ndarray
    ann_ids: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    iscrowd: np.ndarray
    path: str | None = None
    image_root: Path | None = None
    _by_image: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_labelled(self) -> np.ndarray:
        """(N,) number of labelled keypoints (v > 0) of each person."""
        return (self.keypoints[..., 2] > 0).sum(-1)

    @property
    def counted(self) -> np.ndarray:
        """(N,) bool: the persons evaluation counts (not crowd, some keypoint labelled)."""
        return ~self.iscrowd.astype(bool) & (self.num_labelled > 0)

    def indices_of_image(self, image_id: int) -> np.ndarray:
        """Row indices of the persons of one image."""
        if not self._by_image:
            order = np.argsort(self.image_ids, kind="stable")
            ids, starts = np.unique(self.image_ids[order], return_index=True)
            for i, (img, s) in enumerate(zip(ids, starts, strict=True)):
                e = starts[i + 1] if i + 1 < len(starts) else len(order)
                self._by_image[int(img)] = order[s:e]
            for img in self.images:
                self._by_image.setdefault(int(img), np.zeros(0, dtype=np.int64))
        return self._by_image.get(int(image_id), np.zeros(0, dtype=np.int64))

    def subset(self, rows: np.ndarray, image_ids: Iterable[int] | None = None) -> GroundTruth:
        """A ground truth restricted to some rows (and images)."""
        rows = np.asarray(rows, dtype=np.int64)
        keep = set(int(i) for i in (image_ids if image_ids is not None else self.image_ids[rows]))
        return GroundTruth(
            spec=self.spec,
            images={k: v for k, v in self.images.items() if k in keep},
            image_ids=self.image_ids[rows],
            ann_ids=self.ann_ids[rows],
            keypoints=self.keypoints[rows],
            boxes=self.boxes[rows],
            areas=self.areas[rows],
            iscrowd=self.iscrowd[rows],
            path=self.path,
            image_root=self.image_root,
        )

    def image_path(self, image_id: int) -> Path:
        """Absolute path of an image, checked not to escape the image root."""
        root = self.image_root if self.image_root is not None else Path(".")
        return resolve_image_path(root, self.images[int(image_id)].file_name, source=self.path)

    def to_coco(self) -> dict[str, Any]:
        """A COCO-format dict (for pycocotools and for writing subsets)."""
        images = [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in self.images.values()
        ]
        anns = []
        for r in range(len(self)):
            kp = self.keypoints[r]
            anns.append({
                "id": int(self.ann_ids[r]),
                "image_id": int(self.image_ids[r]),
                "category_id": 1,
                "keypoints": [float(v) for v in kp.reshape(-1)],
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "bbox": [float(v) for v in self.boxes[r]],
                "area": float(self.areas[r]),
                "iscrowd": int(self.iscrowd[r]),
            })
        return {
            "images": images,
            "annotations": anns,
            "categories": [{
                "id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(self.spec.keypoints),
                "skeleton": [[i + 1, j + 1] for i, j in self.spec.skeleton],
            }],
        }


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
        """COCO keypoint results (list of dicts)."""
        out = []
        for r in range(len(self)):
            entry = {
                "image_id": int(self.image_ids[r]),
                "category_id": int(self.category_ids[r]),
                "keypoints": [round(float(v), 4) for v in self.keypoints[r].reshape(-1)],
                "score": float(self.scores[r]),
            }
            if np.all(np.isfinite(self.boxes[r])):
                entry["bbox"] = [round(float(v), 4) for v in self.boxes[r]]
            out.append(entry)
        return out


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising :class:`InputError` for a missing, empty or broken file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            path, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file under the current umask (0644 under the
    usual 022): what every file posefix writes gets, though written via a private
    temporary file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *,
                 binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    Nothing is left half-written: on any error the temporary file is removed and ``path``
    keeps its old content (or stays absent). The file gets the user's umask, as with
    ``open()`` (:func:`new_file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp's file is private (0600)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
                       ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = None) -> Path:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=indent))


def resolve_image_path(root: str | Path, file_name: str, source: str | Path | None = None,
                       must_exist: bool = True) -> Path:
    """Join an image file name to its root, refusing names that escape the root."""
    root = Path(root).resolve()
    candidate = (root / file_name).resolve()
    where = source if source is not None else root
    if Path(file_name).is_absolute() or not candidate.is_relative_to(root):
        raise InputError(where, f"image file name {file_name!r} escapes the image root {root}",
                         field_name="file_name")
    if must_exist and not candidate.is_file():
        raise InputError(where, f"image {candidate} does not exist", field_name="file_name")
    return candidate


def _number_array(values: Any, path: Path, index: int, name: str) -> np.ndarray:
    if not isinstance(values, list):
        raise InputError(path, f"must be a list of numbers, got {type(values).__name__}",
                         index, name)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InputError(path, "has a non-numeric value", index, name)
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(path, "has a NaN or infinite value", index, name)
    return arr


def _keypoint_array(values: Any, path: Path, index: int, spec: KeypointSpec | None,
                    third: str, K: int) -> np.ndarray:
    """Entry ``index``'s ``keypoints``: a flat list of 3K numbers, as (K, 3); ``spec`` None:
    K is the first entry's."""
    if isinstance(values, list) and any(isinstance(v, (list, tuple)) for v in values):
        n = f"{3 * K} " if K else "3K "
        raise InputError(path, f"must be a flat list of {n}numbers ({K or 'K'} keypoints x 3: "
                         f"x, y, {third}), not a list of lists", index, "keypoints")
    kp = _number_array(values, path, index, "keypoints")
    if not K:
        raise InputError(path, f"has {kp.size} values, not 3 per keypoint", index, "keypoints")
    if kp.size != 3 * K:
        needs = f"spec {spec.name} needs" if spec is not None else "entry 0 has"
        raise InputError(path, f"has {kp.size} values; {needs} {3 * K} ({K} keypoints x 3)",
                         index, "keypoints")
    return kp.reshape(K, 3)


def _spec_from_categories(data: dict, path: Path) -> KeypointSpec | None:
    cats = data.get("categories") or []
    if not cats or "keypoints" not in cats[0]:
        return None
    names = [str(n).strip().lower().replace(" ", "_") for n in cats[0]["keypoints"]]
    from .spec import available_specs
    for name in available_specs():
        s = load_spec(name)
        if list(s.keypoints) == names:
            return s
    return None


def load_ground_truth(
    path: str | Path,
    spec: KeypointSpec | str | None = None,
    image_root: str | Path | None = None,
    split: str | None = None,
) -> GroundTruth:
    """Load a COCO keypoint annotation file (or mmpose's MPII JSON list form, converted
    with :func:`convert_mpii`).

    Args:
        path: the annotation JSON.
        spec: keypoint layout; by default inferred from the file's category keypoint names.
        image_root: folder that image ``file_name`` s are relative to (default: the file's
            folder).
        split: keep only the images whose ``split`` field has this value (and their
            persons), e.g. LSP's ``test``; an :class:`InputError` if none has it.
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, list):  # mmpose's MPII list form: converted on the fly
        spec = load_spec(spec if spec is not None else "mpii16")
        data = _mpii_to_coco(data, path, spec)
    if not isinstance(data, dict):
        raise InputError(path, "a COCO annotation file must be a JSON object")
    for key in ("images", "annotations"):
        if key not in data or not isinstance(data[key], list):
            raise InputError(path, f"missing list '{key}'", field_name=key)
    if spec is None:
        spec = _spec_from_categories(data, path)
        if spec is None:
            raise InputError(path, "cannot infer the keypoint spec from 'categories'; "
                             "pass one (e.g. --spec coco17)", field_name="categories")
    spec = load_spec(spec)
    K = spec.num_keypoints
    images: dict[int, ImageInfo] = {}
    for i, im in enumerate(data["images"]):
        try:
            own = im.get("split")
            info = ImageInfo(int(im["id"]), str(im["file_name"]), int(im.get("width", 0)),
                             int(im.get("height", 0)), None if own is None else str(own))
        except KeyError as e:
            raise InputError(path, "missing field", i, f"images.{e.args[0]}") from None
        images[info.id] = info
    anns = [a for a in data["annotations"] if int(a.get("category_id", 1)) == 1]
    n = len(anns)
    kps = np.zeros((n, K, 3))
    boxes = np.zeros((n, 4))
    areas = np.zeros(n)
    iscrowd = np.zeros(n, dtype=bool)
    image_ids = np.zeros(n, dtype=np.int64)
    ann_ids = np.zeros(n, dtype=np.int64)
    for r, a in enumerate(anns):
        if "keypoints" not in a:
            raise InputError(path, "missing", r, "keypoints")
        kps[r] = _keypoint_array(a["keypoints"], path, r, spec, "visibility", K)
        if "image_id" not in a:
            raise InputError(path, "missing", r, "image_id")
        image_ids[r] = int(a["image_id"])
        if image_ids[r] not in images:
            raise InputError(path, f"unknown image_id {image_ids[r]}", r, "image_id")
        ann_ids[r] = int(a.get("id", r + 1))
        iscrowd[r] = bool(a.get("iscrowd", 0))
        if "bbox" in a:
            boxes[r] = _number_array(a["bbox"], path, r, "bbox")[:4]
        else:
            vis = kps[r, :, 2] > 0
            if vis.any():
                lo, hi = kps[r, vis, :2].min(0), kps[r, vis, :2].max(0)
                boxes[r] = [*lo, *(hi - lo)]
        # PoseTrack has no 'area': use the box, as its own evaluation does.
        areas[r] = float(a["area"]) if "area" in a else float(boxes[r, 2] * boxes[r, 3])
    _check_unique_ids(ann_ids, path)
    ignored = list(spec.ignore)
    if ignored:
        kps[:, ignored, 2] = 0
    gt = GroundTruth(
        spec=spec, images=images, image_ids=image_ids, ann_ids=ann_ids, keypoints=kps,
        boxes=boxes, areas=areas, iscrowd=iscrowd, path=str(path),
        image_root=Path(image_root) if image_root is not None else _guess_root(path, images),
    )
    return gt if split is None else _restrict_to_split(gt, split, path)


def _check_unique_ids(ann_ids: np.ndarray, path: Path) -> None:
    """Refuse a repeated annotation id: pycocotools indexes annotations by id, so it would
    evaluate against a different set of persons than this file lists."""
    ids, counts = np.unique(ann_ids, return_counts=True)
    if (counts > 1).any():
        dup = int(ids[counts > 1][0])
        first, again = np.flatnonzero(ann_ids == dup)[:2].tolist()
        raise InputError(path, f"duplicate annotation id {dup} (also entry {first}); every "
                         "annotation needs its own id (pycocotools keeps only one of them)",
                         again, "id")


def _restrict_to_split(gt: GroundTruth, split: str, path: Path) -> GroundTruth:
    """The images of ``gt`` whose ``split`` is ``split``, with their persons."""
    keep = list(images_of_split(gt.images, split, path))
    rows = np.flatnonzero(np.isin(gt.image_ids, np.asarray(keep, dtype=np.int64)))
    return gt.subset(rows, image_ids=keep)


def images_of_split(images: dict[int, ImageInfo], split: str, path: str | Path
                    ) -> dict[int, ImageInfo]:
    """The images whose ``split`` field is ``split``; an :class:`InputError` naming
    ``path`` and the splits it has if there is none."""
    kept = {i: im for i, im in images.items() if im.split == split}
    if not kept:
        found = sorted({str(im.split) for im in images.values()})
        raise InputError(path, f"no image has split {split!r} (the file's splits: "
                         f"{', '.join(found)})", field_name="images.split")
    return kept


def _guess_root(path: Path, images: dict[int, ImageInfo]) -> Path:
    """The annotation file's folder, or its parent where the image names are relative to
    that (PoseTrack keeps ``annotations/`` beside ``images/``)."""
    first = next(iter(images.values()), None)
    if first is not None:
        for root in (path.parent, path.parent.parent):
            if (root / first.file_name).is_file():
                return root
    return path.parent


def load_results(
    path: str | Path,
    spec: KeypointSpec | str | None,
    image_ids: Iterable[int] | None = None,
    strict: bool = False,
) -> Detections:
    """Load and validate a COCO keypoint results file (any estimator's output).

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
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(path, "a COCO results file must be a JSON list of detections")
    if not data:
        warnings.warn(f"{path}: no detections (an empty results list)", stacklevel=2)
    K = spec.num_keypoints if spec is not None else _first_keypoint_count(data)
    known = set(int(i) for i in image_ids) if image_ids is not None else None
    rows_img, rows_kp, rows_score, rows_box, rows_cat = [], [], [], [], []
    unknown = 0
    for i, d in enumerate(data):
        if not isinstance(d, dict):
            raise InputError(path, "must be an object", i)
        for key in ("image_id", "keypoints", "score"):
            if key not in d:
                raise InputError(path, "missing", i, key)
        if isinstance(d["image_id"], bool) or not isinstance(d["image_id"], (int, str)):
            raise InputError(path, "must be an integer", i, "image_id")
        try:
            img = int(d["image_id"])
        except ValueError:
            raise InputError(path, "must be an integer", i, "image_id") from None
        kp = _keypoint_array(d["keypoints"], path, i, spec, "score", K)
        s = d["score"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise InputError(path, f"must be a finite number, got {s!r}", i, "score")
        if s < 0:
            raise InputError(path, f"must not be negative, got {s}", i, "score")
        box = np.full(4, np.nan)
        if "bbox" in d:
            b = _number_array(d["bbox"], path, i, "bbox")
            if b.size != 4:
                raise InputError(path, f"must have 4 values, got {b.size}", i, "bbox")
            box = b
        if known is not None and img not in known:
            if strict:
                raise InputError(path, f"unknown image_id {img}", i, "image_id")
            unknown += 1
            continue
        rows_img.append(img)
        rows_kp.append(kp)
        rows_score.append(float(s))
        rows_box.append(box)
        rows_cat.append(int(d.get("category_id", 1)))
    if unknown:
        warnings.warn(f"{path}: skipped {unknown} detection(s) with an unknown image_id",
                      stacklevel=2)
    if not rows_img:
        return Detections.empty(K)
    return Detections(
        image_ids=np.asarray(rows_img, dtype=np.int64),
        keypoints=np.stack(rows_kp),
        scores=np.asarray(rows_score),
        boxes=np.stack(rows_box),
        category_ids=np.asarray(rows_cat, dtype=np.int64),
    )


def _first_keypoint_count(data: list) -> int:
    """K of the first detection of a results list (0 where it cannot tell)."""
    first = data[0].get("keypoints") if data and isinstance(data[0], dict) else None
    if not isinstance(first, list):
        return 0
    if first and all(isinstance(v, list) and len(v) == 3 for v in first):
        return len(first)  # [[x, y, s], ...]: refused, but the message can say 3K
    return len(first) // 3 if len(first) % 3 == 0 else 0


def convert_mpii(path: str | Path, spec: KeypointSpec | str = "mpii16") -> dict[str, Any]:
    """Convert mmpose's MPII JSON list form to a COCO keypoint annotation dict.

    Each entry has ``image``, ``joints`` (16 x 2), ``joints_vis``, ``center`` and ``scale``
    (box height / 200). The box is the centre with 200 * scale on each side, clipped to the
    labelled joints' extent when larger; the area is the box area (MPII has no masks).
    """
    path = Path(path)
    return _mpii_to_coco(read_json(path), path, load_spec(spec))


def _mpii_to_coco(data: Any, path: Path, spec: KeypointSpec) -> dict[str, Any]:
    """:func:`convert_mpii` of the already-read JSON ``data`` of ``path``."""
    K = spec.num_keypoints
    if not isinstance(data, list):
        raise InputError(path, "the MPII form is a JSON list of entries")
    images: dict[str, int] = {}
    anns = []
    for i, e in enumerate(data):
        for key in ("image", "joints", "joints_vis", "center", "scale"):
            if key not in e:
                raise InputError(path, "missing", i, key)
        joints = _number_array([v for j in e["joints"] for v in j], path, i, "joints")
        if joints.size != 2 * K:
            raise InputError(path, f"has {joints.size // 2} joints; spec needs {K}", i, "joints")
        vis = _number_array(e["joints_vis"], path, i, "joints_vis").reshape(K) > 0
        joints = joints.reshape(K, 2)
        kp = np.zeros((K, 3))
        kp[vis, :2] = joints[vis]
        kp[vis, 2] = 2
        name = str(e["image"])
        img_id = images.setdefault(name, len(images) + 1)
        cx, cy = _number_array(e["center"], path, i, "center")
        size = 200.0 * float(e["scale"])
        if vis.any():
            lo, hi = joints[vis].min(0), joints[vis].max(0)
            box = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
        else:
            box = [cx - size / 2, cy - size / 2, size, size]
        anns.append({
            "id": i + 1, "image_id": img_id, "category_id": 1, "iscrowd": 0,
            "keypoints": [float(v) for v in kp.reshape(-1)], "num_keypoints": int(vis.sum()),
            "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
        })
    image_list = []
    for name, img_id in images.items():
        w = h = 0
        img_path = path.parent / name
        if img_path.is_file():
            from PIL import Image
            with Image.open(img_path) as im:
                w, h = im.size
        image_list.append({"id": img_id, "file_name": name, "width": w, "height": h})
    return {
        "images": image_list,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": list(spec.keypoints),
                        "skeleton": [[a + 1, b + 1] for a, b in spec.skeleton]}],
    }


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
