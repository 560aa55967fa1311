"""COCO keypoint annotations and results: read, validated and held as arrays; MPII conversion.

Ground truth and results are held as arrays (one row per person) so that every later
stage can vectorize. Bad input raises :class:`~posefix.errors.InputError` naming the file,
the entry and the field; results are written whole or not at all
(:func:`~posefix.jsonfiles.write_json_list_atomic`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, malformed
from .jsonfiles import (
    iter_json_list,
    iter_json_object,
    read_json,
    round_like_python,
    write_json_list_atomic,
)
from .spec import KeypointSpec, SpecError, load_spec

__all__ = [
    "Detections",
    "GroundTruth",
    "ImageInfo",
    "convert_mpii",
    "images_of_split",
    "keep_known",
    "load_ground_truth",
    "load_results",
    "resolve_image_path",
    "same_image_pairs",
    "write_results",
]


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


#: The largest coordinate (or box side) a file may hold: far beyond any image, and small
#: enough that squares and areas stay finite even in float32 (1e308 overflowed them).
MAX_COORDINATE = 1e15
#: The largest area (a box of MAX_COORDINATE on each side).
MAX_AREA = MAX_COORDINATE ** 2


def _number_array(values: Any, path: Path, index: int | None, name: str,
                  limit: float = MAX_COORDINATE) -> np.ndarray:
    if not isinstance(values, list):
        raise InputError(path, f"must be a list of numbers, got {type(values).__name__}",
                         index, name)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InputError(path, "has a non-numeric value", index, name)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond a double
        arr = np.array([np.inf])
    return check_numbers(arr, path, index, name, limit)


def check_numbers(arr: np.ndarray, path: str | Path, index: int | None, name: str,
                  limit: float = MAX_COORDINATE) -> np.ndarray:
    """``arr`` if every value is finite and within ``limit`` of zero, else an
    :class:`InputError` naming the entry and field."""
    if not np.all(np.isfinite(arr)):
        raise InputError(path, "has a NaN or infinite value", index, name)
    if arr.size and np.abs(arr).max() > limit:
        raise InputError(path, f"has a value beyond {limit:g} ({np.abs(arr).max():g}): no "
                         "image is that large", index, name)
    return arr


def _number(value: Any, path: Path, index: int, name: str, limit: float = MAX_AREA
            ) -> float:
    """A finite number within ``limit``, or an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"must be a number, got {value!r:.40}", index, name)
    try:
        v = float(value)
    except OverflowError:  # an integer beyond a double
        v = math.inf
    return float(check_numbers(np.array([v]), path, index, name, limit)[0])


def _integer(value: Any, path: Path, index: int, name: str) -> int:
    """A JSON integer (not a string, as pycocotools refuses one; not a bool) that fits 64
    bits, or an :class:`InputError`."""
    if type(value) is not int:
        kind = "a string" if isinstance(value, str) else type(value).__name__
        raise InputError(path, f"must be an integer, got {kind} {value!r:.40}"
                         + (" (pycocotools refuses a string id)"
                            if isinstance(value, str) else ""), index, name)
    if not -(1 << 63) <= value < (1 << 63):
        raise InputError(path, f"must fit in 64 bits, got {value:.3g}", index, name)
    return value


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
    if not isinstance(cats, list) or not cats or not isinstance(cats[0], dict) \
            or not isinstance(cats[0].get("keypoints"), list):
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

    A COCO file is parsed as a stream, its ``images`` and ``annotations`` a block at a time
    straight into arrays without the fields posefix does not use (segmentation polygons
    are most of a COCO file); a file the stream cannot vouch for is read whole, so that
    the errors name the bad entry and field as they always have.

    Args:
        path: the annotation JSON.
        spec: keypoint layout; by default inferred from the file's category keypoint names.
        image_root: folder that image ``file_name`` s are relative to (default: the file's
            folder).
        split: keep only the images whose ``split`` field has this value (and their
            persons), e.g. LSP's ``test``; an :class:`InputError` if none has it.
    """
    path = Path(path)
    try:
        parsed = _stream_ground_truth(path, spec)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        parsed = None  # the whole-file path names what is wrong, as it always has
    if parsed is None:
        with malformed(path, keep=(SpecError,)):
            parsed = _whole_ground_truth(path, spec)
    spec, images, arrays = parsed
    kps, boxes, areas, iscrowd, image_ids, ann_ids = arrays
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


_Parsed = tuple[KeypointSpec, dict[int, ImageInfo], tuple[np.ndarray, ...]]


def _whole_ground_truth(path: Path, spec: KeypointSpec | str | None) -> _Parsed:
    """:func:`load_ground_truth`'s spec, images and person arrays from the whole file parsed
    at once (the MPII list form; any file the stream refuses, whose fault this names)."""
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
    images: dict[int, ImageInfo] = {}
    _add_images(images, data["images"], path, 0)
    anns = _persons(data["annotations"], path, 0)
    arrays = _annotations_fast(anns, spec.num_keypoints, images.keys())
    return spec, images, (
        arrays if arrays is not None else _annotations_checked(anns, path, spec, images))


def _persons(entries: list[Any], path: Path, start: int) -> list[dict]:
    """The person annotations (``category_id`` 1, the default) of entries ``start, start +
    1, ...`` of ``annotations``; an entry that is no object, or whose ``category_id`` is no
    integer, is an :class:`InputError`."""
    out = []
    for i, a in enumerate(entries, start):
        if type(a) is not dict:
            raise InputError(path, "must be an object", i, "annotations")
        if _integer(a.get("category_id", 1), path, i, "annotations.category_id") == 1:
            out.append(a)
    return out


def _add_images(images: dict[int, ImageInfo], entries: list[Any], path: Path,
                start: int) -> None:
    """Entries ``start, start + 1, ...`` of the file's ``images`` into ``images``."""
    for i, im in enumerate(entries, start):
        if type(im) is not dict:
            raise InputError(path, "must be an object", i, "images")
        for key in ("id", "file_name"):
            if key not in im:
                raise InputError(path, "missing field", i, f"images.{key}")
        if not isinstance(im["file_name"], str):
            raise InputError(path, "must be a string", i, "images.file_name")
        size = [_image_side(im.get(k, 0), path, i, f"images.{k}") for k in ("width", "height")]
        own = im.get("split")
        info = ImageInfo(_integer(im["id"], path, i, "images.id"), im["file_name"], *size,
                         None if own is None else str(own))
        images[info.id] = info


def _image_side(value: Any, path: Path, index: int, name: str) -> int:
    """An image's width or height: a whole number from 0 (unknown) to
    :data:`MAX_COORDINATE`."""
    if value is None:
        return 0
    v = _number(value, path, index, name, MAX_COORDINATE)
    if v < 0 or v != int(v):
        raise InputError(path, f"must be a whole number >= 0, got {value!r}", index, name)
    return int(v)


def _stream_ground_truth(path: Path, spec: KeypointSpec | str | None, block: int = 1 << 22
                         ) -> _Parsed | None:
    """:func:`_whole_ground_truth`'s result from the file read as a stream: the persons go
    into arrays a chunk at a time, without the fields posefix does not use (segmentation
    polygons are most of a COCO file). None where the stream cannot be sure of the same
    result (an MPII list, a repeated key, an annotation the fast checks refuse)."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        if f.read(1 << 12).lstrip()[:1] != b"{":
            return None
    spec = load_spec(spec) if spec is not None else None
    images: dict[int, ImageInfo] = {}
    persons: tuple[int | None, tuple[np.ndarray, ...] | None] | None = None
    cats, seen = None, []
    for key, value in iter_json_object(path, block):
        if key in seen or (key in ("images", "annotations") and not isinstance(value, Iterator)):
            return None  # a repeated key (the last counts) or no list: see the whole file
        seen.append(key)
        if key == "images":
            start = 0
            for chunk in value:
                _add_images(images, chunk, path, start)
                start += len(chunk)
        elif key == "annotations":
            persons = _person_chunks(value, spec.num_keypoints if spec else None,
                                     images.keys() if "images" in seen else None)
            if persons is None:
                return None
        elif key == "categories":
            cats = [e for c in value for e in c] if isinstance(value, Iterator) else value
    return _stream_result(path, spec, images, persons, cats, seen)


def _person_chunks(chunks: Iterator[list[Any]], K: int | None, known: Collection[int] | None
                   ) -> tuple[int | None, tuple[np.ndarray, ...] | None] | None:
    """The person arrays of the ``annotations`` list, built a chunk at a time: (K, arrays or
    None where there is no person), K the spec's or, where the spec is not known yet, the
    first person's; None where a chunk needs the checked path."""
    rows: _Rows | None = None
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
        part = _annotations_fast(anns, K, known, start)
        if part is None:
            return None
        rows = rows or _Rows(tuple(a[:0] for a in part))
        rows.append(part)
        start += len(anns)
    return K, rows.result() if rows is not None else None


def _stream_result(path: Path, spec: KeypointSpec | None, images: dict[int, ImageInfo],
                   persons: tuple[int | None, tuple[np.ndarray, ...] | None] | None,
                   cats: Any, seen: list[str]) -> _Parsed | None:
    """:func:`_stream_ground_truth`'s result from what the stream gathered, or None where
    it differs from the whole file's (no spec, another K, unknown image ids)."""
    if persons is None or "images" not in seen:
        return None
    if spec is None:
        spec = _spec_from_categories({"categories": cats}, path)
        if spec is None:
            return None
    K, arrays = persons
    if arrays is not None and K != spec.num_keypoints:
        return None
    if arrays is None:  # no person annotation
        arrays = _annotations_fast([], spec.num_keypoints, None)
    image_ids = arrays[4]
    if seen.index("images") > seen.index("annotations") and not np.isin(
            image_ids, np.fromiter(images, dtype=np.int64, count=len(images))).all():
        return None
    return spec, images, arrays


def _annotations_fast(anns: list[dict], K: int, known: Collection[int] | None, start: int = 0
                      ) -> tuple[np.ndarray, ...] | None:
    """The person arrays of :func:`load_ground_truth` for a list of person annotations at
    once (entries ``start, start + 1, ...`` of those of the file), or None where some
    annotation needs :func:`_annotations_checked` (to name what is wrong). ``known``: the
    image ids (None: not checked here)."""
    n = len(anns)
    if not all(type(a) is dict and "keypoints" in a and type(a.get("image_id")) is int
               for a in anns):
        return None
    kps = _numbers([a["keypoints"] for a in anns], 3 * K) if n else np.zeros((0, 3 * K))
    image_ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    if kps is None or (known is not None and not set(image_ids.tolist()) <= known):
        return None
    kps = kps.reshape(n, K, 3)
    boxes = np.zeros((n, 4))
    with_box = [r for r, a in enumerate(anns) if "bbox" in a]
    if with_box:
        b = _numbers([anns[r]["bbox"] for r in with_box], 4)
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


def _annotations_checked(anns: list[Any], path: Path, spec: KeypointSpec,
                         images: dict[int, ImageInfo]) -> tuple[np.ndarray, ...]:
    """:func:`_annotations_fast`'s arrays one annotation at a time, raising an
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
        kps[r] = _keypoint_array(a["keypoints"], path, r, spec, "visibility", K)
        if "image_id" not in a:
            raise InputError(path, "missing", r, "image_id")
        image_ids[r] = _integer(a["image_id"], path, r, "image_id")
        if image_ids[r] not in images:
            raise InputError(path, f"unknown image_id {image_ids[r]}", r, "image_id")
        ann_ids[r] = _integer(a.get("id", r + 1), path, r, "id")
        crowd = a.get("iscrowd", 0)
        if type(crowd) not in (int, bool):
            raise InputError(path, f"must be 0 or 1, got {crowd!r:.40}", r, "iscrowd")
        iscrowd[r] = bool(crowd)
        if "bbox" in a:
            b = _number_array(a["bbox"], path, r, "bbox")
            if b.size < 4:
                raise InputError(path, f"must have 4 values, got {b.size}", r, "bbox")
            boxes[r] = b[:4]
        else:
            vis = kps[r, :, 2] > 0
            if vis.any():
                lo, hi = kps[r, vis, :2].min(0), kps[r, vis, :2].max(0)
                boxes[r] = [*lo, *(hi - lo)]
        areas[r] = _number(a["area"], path, r, "area") if "area" in a else \
            float(boxes[r, 2] * boxes[r, 3])
    return kps, boxes, areas, iscrowd, image_ids, ann_ids


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


class _Rows:
    """Arrays appended to in parts, a row at a time, in arrays that double when full: large
    arrays are mapped memory, returned whole when freed, so that a parse leaves no holes
    behind among the parts it has freed."""

    def __init__(self, empty: tuple[np.ndarray, ...], capacity: int = 1 << 14) -> None:
        self.n = 0
        self.arrays = empty
        self._resize(capacity)

    def _resize(self, capacity: int) -> None:
        self.arrays = tuple(self._grown(old, capacity) for old in self.arrays)

    def _grown(self, old: np.ndarray, capacity: int) -> np.ndarray:
        new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
        new[:self.n] = old[:self.n]
        return new

    def append(self, part: tuple[np.ndarray, ...]) -> None:
        """Add rows at the end."""
        end = self.n + len(part[0])
        if end > len(self.arrays[0]):
            self._resize(max(end, 2 * len(self.arrays[0])))
        for a, p in zip(self.arrays, part, strict=True):
            a[self.n:end] = p
        self.n = end

    def result(self) -> tuple[np.ndarray, ...]:
        """The rows so far (views: the unused capacity is never touched, so never paged)."""
        return tuple(a[:self.n] for a in self.arrays)


class _Growing(_Rows):
    """:class:`_Rows` of detections."""

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


def _numbers(lists: list[Any], size: int | None) -> np.ndarray | None:
    """``lists`` as a float array if every one is a list of ``size`` finite numbers (not
    bools), else None (then the entries are checked one by one for the message)."""
    if not all(type(v) is list for v in lists):
        return None
    if size is not None and any(len(v) != size for v in lists):
        return None
    if not set(map(type, itertools.chain.from_iterable(lists))) <= {int, float}:
        return None
    try:
        arr = np.array(lists, dtype=np.float64)
    except OverflowError:  # an integer beyond a double: the checked path names it
        return None
    if arr.ndim != 2 or not np.isfinite(arr).all() or \
            np.abs(arr).max(initial=0) > MAX_COORDINATE:
        return None
    return arr


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
    kp = _numbers([d["keypoints"] for d in chunk], 3 * K) if fast else None
    if kp is not None:
        s = np.array(scores, dtype=np.float64)
        with_box = [i for i, d in enumerate(chunk) if "bbox" in d]
        b = _numbers([chunk[i]["bbox"] for i in with_box], 4) if with_box else \
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
    img = _integer(d["image_id"], path, i, "image_id")
    kp = _keypoint_array(d["keypoints"], path, i, spec, "score", K)  # checks 3K values
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
    return img, kp, float(s), box, _integer(d.get("category_id", 1), path, i, "category_id")


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
    spec = load_spec(spec)
    data = read_json(path)
    with malformed(path):
        return _mpii_to_coco(data, path, spec)


def _mpii_to_coco(data: Any, path: Path, spec: KeypointSpec) -> dict[str, Any]:
    """:func:`convert_mpii` of the already-read JSON ``data`` of ``path``."""
    K = spec.num_keypoints
    if not isinstance(data, list):
        raise InputError(path, "the MPII form is a JSON list of entries")
    images: dict[str, int] = {}
    anns = []
    for i, e in enumerate(data):
        if type(e) is not dict:
            raise InputError(path, "must be an object", i)
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
