"""COCO keypoint ground truth: :class:`GroundTruth`, its persons as arrays, read by
:func:`load_ground_truth` (a COCO file as a stream; mmpose's MPII list form converted).

Bad input raises :class:`~posefix.errors.InputError` naming the file, the entry and the
field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, malformed
from .fields import MAX_COORDINATE, integer, number
from .imagepaths import ImageInfo, guess_image_root, resolve_image_path
from .jsonfiles import iter_json_object, read_json
from .mpii import mpii_to_coco
from .persons import (
    check_unique_ids,
    person_arrays,
    person_arrays_checked,
    person_chunks,
    person_entries,
)
from .spec import KeypointSpec, SpecError, load_spec

logger = logging.getLogger(__name__)

__all__ = ["GroundTruth", "ImageInfo", "WholeFile", "images_of_split", "load_ground_truth"]


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
    are most of a COCO file). The whole file is read instead only where the stream names
    a reason (a :class:`WholeFile`, logged at INFO on the ``posefix.groundtruth`` logger):
    the MPII list form, a repeated key, or an entry the fast checks refuse, which the
    whole-file read names by entry and field. An error of the stream itself is raised,
    never retried.

    Args:
        path: the annotation JSON.
        spec: keypoint layout; by default inferred from the file's category keypoint names.
        image_root: folder that image ``file_name`` s are relative to (default: the file's
            folder).
        split: keep only the images whose ``split`` field has this value (and their
            persons), e.g. LSP's ``test``; an :class:`InputError` if none has it.
    """
    path = Path(path)
    with malformed(path, keep=(SpecError,)):
        parsed = _stream_ground_truth(path, spec)
        if isinstance(parsed, WholeFile):
            logger.info("%s: read whole, not as a stream: %s", path, parsed.reason)
            parsed = _whole_ground_truth(path, spec)
    spec, images, arrays = parsed
    kps, boxes, areas, iscrowd, image_ids, ann_ids = arrays
    check_unique_ids(ann_ids, path)
    ignored = list(spec.ignore)
    if ignored:
        kps[:, ignored, 2] = 0
    gt = GroundTruth(
        spec=spec, images=images, image_ids=image_ids, ann_ids=ann_ids, keypoints=kps,
        boxes=boxes, areas=areas, iscrowd=iscrowd, path=str(path),
        image_root=Path(image_root) if image_root is not None else guess_image_root(path, images),
    )
    return gt if split is None else _restrict_to_split(gt, split, path)


_Parsed = tuple[KeypointSpec, dict[int, ImageInfo], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class WholeFile:
    """Why :func:`load_ground_truth` reads a file whole instead of as a stream: the stream
    could not be sure of the whole file's result, or of its error's message."""

    reason: str


def _whole_ground_truth(path: Path, spec: KeypointSpec | str | None) -> _Parsed:
    """:func:`load_ground_truth`'s spec, images and person arrays from the whole file parsed
    at once (the MPII list form; any file the stream refuses, whose fault this names)."""
    data = read_json(path)
    if isinstance(data, list):  # mmpose's MPII list form: converted on the fly
        spec = load_spec(spec if spec is not None else "mpii16")
        data = mpii_to_coco(data, path, spec)
    if not isinstance(data, dict):
        raise InputError(path, "a COCO annotation file must be a JSON object")
    for key in ("images", "annotations"):
        if key not in data or not isinstance(data[key], list):
            raise InputError(path, f"missing list '{key}'", field_name=key)
    if spec is None:
        spec = _spec_from_categories(data, path)
        if spec is None:
            raise _no_spec(path)
    spec = load_spec(spec)
    images: dict[int, ImageInfo] = {}
    _add_images(images, data["images"], path, 0)
    anns = person_entries(data["annotations"], path, 0)
    arrays = person_arrays(anns, spec.num_keypoints, images.keys())
    return spec, images, (
        arrays if arrays is not None else person_arrays_checked(anns, path, spec, images))


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
        info = ImageInfo(integer(im["id"], path, i, "images.id"), im["file_name"], *size,
                         None if own is None else str(own))
        images[info.id] = info


def _image_side(value: Any, path: Path, index: int, name: str) -> int:
    """An image's width or height: a whole number from 0 (unknown) to
    :data:`MAX_COORDINATE`."""
    if value is None:
        return 0
    v = number(value, path, index, name, MAX_COORDINATE)
    if v < 0 or v != int(v):
        raise InputError(path, f"must be a whole number >= 0, got {value!r}", index, name)
    return int(v)


def _stream_ground_truth(path: Path, spec: KeypointSpec | str | None, block: int = 1 << 22
                         ) -> _Parsed | WholeFile:
    """:func:`_whole_ground_truth`'s result from the file read as a stream: the persons go
    into arrays a chunk at a time, without the fields posefix does not use (segmentation
    polygons are most of a COCO file). A :class:`WholeFile` where the stream cannot be sure
    of the same result (an MPII list, a repeated key, an annotation the fast checks
    refuse)."""
    if not path.is_file():
        return WholeFile("not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 12).lstrip()[:1]
    except OSError as e:
        return WholeFile(f"cannot be opened ({type(e).__name__})")
    if head != b"{":
        return WholeFile("not a JSON object (the MPII list form?)")
    spec = load_spec(spec) if spec is not None else None
    images: dict[int, ImageInfo] = {}
    persons: tuple[int | None, tuple[np.ndarray, ...] | None] | None = None
    cats, seen = None, []
    for key, value in iter_json_object(path, block):
        if key in seen or (key in ("images", "annotations") and not isinstance(value, Iterator)):
            return WholeFile(f"key {key!r} " + ("repeated (the last counts)" if key in seen
                                                else "holds no list"))
        seen.append(key)
        if key == "images":
            start = 0
            for chunk in value:
                _add_images(images, chunk, path, start)
                start += len(chunk)
        elif key == "annotations":
            persons = person_chunks(value, spec.num_keypoints if spec else None,
                                     images.keys() if "images" in seen else None)
            if persons is None:
                return WholeFile("an annotation the fast checks refuse (the whole file names "
                                 "it)")
        elif key == "categories":
            cats = [e for c in value for e in c] if isinstance(value, Iterator) else value
    return _stream_result(path, spec, images, persons, cats, seen)


def _stream_result(path: Path, spec: KeypointSpec | None, images: dict[int, ImageInfo],
                   persons: tuple[int | None, tuple[np.ndarray, ...] | None] | None,
                   cats: Any, seen: list[str]) -> _Parsed | WholeFile:
    """:func:`_stream_ground_truth`'s result from what the stream gathered, or a
    :class:`WholeFile` where it may differ from the whole file's (another K, unknown image
    ids); no spec named is the whole file's :class:`InputError`."""
    if persons is None or "images" not in seen:
        return WholeFile(f"no list '{'images' if 'images' not in seen else 'annotations'}'")
    if spec is None:
        spec = _spec_from_categories({"categories": cats}, path)
        if spec is None:  # the whole file's error: its images and annotations are lists
            raise _no_spec(path)
    K, arrays = persons
    if arrays is not None and K != spec.num_keypoints:
        return WholeFile(f"{K} keypoints, not the spec's {spec.num_keypoints}")
    if arrays is None:  # no person annotation
        arrays = person_arrays([], spec.num_keypoints, None)
    image_ids = arrays[4]
    if seen.index("images") > seen.index("annotations") and not np.isin(
            image_ids, np.fromiter(images, dtype=np.int64, count=len(images))).all():
        return WholeFile("an annotation of an unknown image")
    return spec, images, arrays


def _no_spec(path: Path) -> InputError:
    """The error of a file whose ``categories`` name no known keypoint layout."""
    return InputError(path, "cannot infer the keypoint spec from 'categories'; pass one (e.g. "
                      "--spec coco17)", field_name="categories")


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
