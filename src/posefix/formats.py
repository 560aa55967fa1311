"""Reading what pose estimators write: COCO results, mmpose's inferencer output, OpenPose's
per-image JSON and plain per-image arrays, into :class:`~posefix.io.Detections` in the
model's keypoint layout.

Formats (:data:`FORMATS`; :func:`detect_format` tells them apart, or name one):

* ``coco``: a results list ``[{image_id, category_id, keypoints: [x, y, s] * K, score}]``
  (:func:`posefix.io.load_results`), keyed by image id.
* ``mmpose``: ``MMPoseInferencer``'s predictions: one image's instances ``[{keypoints:
  [[x, y]] * K, keypoint_scores: [s] * K, bbox: [x1, y1, x2, y2] (or [[...]]), bbox_score}]``
  (what ``pred_out_dir`` writes per image, named after it); the inferencer's return value
  ``{predictions: [[instances of image 0], ...]}`` (keyed by position); a video's
  ``[{frame_id, instances}]``. Keypoints are in the model's layout (an mmpose model of the
  same dataset). Person score: the mean keypoint score.
* ``openpose``: one image's ``{people: [{pose_keypoints_2d: [x, y, c] * 25 or 18}]}`` (BODY_25
  or COCO-18, mapped to the model's layout by joint name: BODY_25's neck, mid-hip and feet,
  and COCO-18's neck, have no COCO-17 counterpart and are dropped). A folder of such files,
  ``<image>_keypoints.json`` as OpenPose's ``--write_json`` names them, is keyed by image.
  Person score: the mean confidence of the detected joints.
* ``arrays``: ``{image: [[[x, y, s] or [x, y]] * K] * N}`` or ``{image: {keypoints: ...,
  scores: [s] * N}}`` (e.g. Ultralytics' ``results[i].keypoints.data.tolist()`` per image),
  in the model's layout. Person score: ``scores``, else the mean keypoint score (1 for x, y).

An image key is an image file name or stem, or an image id or frame index (an integer, or
digits where no file is so named), which :func:`to_detections` looks up in the image list.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, malformed
from .io import MAX_COORDINATE, Detections, ImageInfo, check_numbers, keep_known, load_results
from .jsonfiles import read_json
from .spec import KeypointSpec, SpecError, convert_layout, load_spec

__all__ = ["FORMATS", "OUT_FORMATS", "PoseFile", "detect_format",
           "image_keys", "image_list_from_keys", "read_poses", "sniff_format", "to_arrays",
           "to_detections"]

#: Each format and what it expects (the message for a file that matches none).
FORMATS = {
    "coco": "a JSON list of {image_id, keypoints: [x, y, score] * K, score}",
    "mmpose": "a list of {keypoints: [[x, y]] * K, keypoint_scores} per image, "
              "{predictions: [[...], ...]} or [{frame_id, instances}]",
    "openpose": "{people: [{pose_keypoints_2d: [x, y, c] * 25 or 18}]} per image, or a folder "
                "of <image>_keypoints.json",
    "arrays": "{image: (N, K, 2 or 3) nested lists} or {image: {keypoints, scores}}",
}
#: What ``posefix refine`` writes: COCO results, or the ``arrays`` format keyed as the input.
OUT_FORMATS = ("coco", "arrays")
_OPENPOSE = {25 * 3: "body25", 18 * 3: "openpose18"}
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class PoseFile:
    """Poses read from a file: ``detections`` in the model's layout, whose ``image_ids`` are
    positions in ``keys`` (image ids or frame indices as ``int``, image names as ``str``)."""

    format: str
    keys: list[int | str]
    detections: Detections


def _no_format(path: Path) -> InputError:
    expects = "; ".join(f"{name}: {what}" for name, what in FORMATS.items())
    return InputError(path, f"matches no pose format ({expects})")


def detect_format(data: Any) -> str | None:
    """The format of parsed JSON, or None."""
    if isinstance(data, list):
        first = next((d for d in data if isinstance(d, dict)), None)
        if not data or (first is not None and "image_id" in first):
            return "coco"
        if first is not None and ("keypoint_scores" in first or "instances" in first):
            return "mmpose"
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("people"), list):
        return "openpose"
    if isinstance(data.get("predictions"), list):
        return "mmpose"
    if data and all(isinstance(v, (list, dict)) for v in data.values()):
        return "arrays"
    return None


def sniff_format(path: str | Path) -> str | None:
    """The format of a file or folder: COCO results (and mmpose lists) from the head of the
    file, without parsing a large file twice; others by :func:`detect_format`."""
    path = Path(path)
    if path.is_dir():  # the first file that tells (an image without persons may be [])
        for file in sorted(path.glob("*.json")):
            data = read_json(file)
            if data != []:
                with malformed(file):
                    return detect_format(data)
        return None
    if not path.is_file():
        raise InputError(path, "file does not exist")
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith("["):
        if '"image_id"' in head or head[1:].lstrip().startswith("]"):
            return "coco"
        if '"keypoint_scores"' in head or '"instances"' in head:
            return "mmpose"
    data = read_json(path)
    with malformed(path):
        return detect_format(data)


def _person_scores(kp: np.ndarray) -> np.ndarray:
    """Mean score of the detected (score > 0) keypoints of each person."""
    s = kp[..., 2]
    return (s * (s > 0)).sum(1) / np.maximum((s > 0).sum(1), 1)


def _rows(value: Any, path: Path, where: str) -> np.ndarray:
    """Nested lists of finite numbers within :data:`posefix.io.MAX_COORDINATE` as a float
    array, or an :class:`InputError` naming the place."""
    if isinstance(value, (str, bytes, dict, bool)) or value is None:
        raise InputError(path, f"must be nested lists of numbers, got {type(value).__name__}",
                         field_name=where)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, "must be nested lists of numbers of one shape",
                         field_name=where) from None
    return check_numbers(arr, path, None, where, MAX_COORDINATE)


# --------------------------------------------------------------------------- readers
def _read_openpose(data: Any, path: Path, spec: KeypointSpec,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One OpenPose image file: (n, K, 3) keypoints in ``spec``'s layout, (n,) scores and
    (n, 4) boxes (none: NaN)."""
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise InputError(path, f"not an OpenPose file: expected {FORMATS['openpose']}")
    kps = []
    for i, person in enumerate(data["people"]):
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise InputError(path, "missing", i, "people.pose_keypoints_2d")
        flat = _rows(person["pose_keypoints_2d"], path, f"people[{i}].pose_keypoints_2d")
        if flat.ndim != 1 or flat.size not in _OPENPOSE:
            raise InputError(path, f"has {flat.size} values; BODY_25 has 75, COCO-18 has 54",
                             i, "people.pose_keypoints_2d")
        source = load_spec(_OPENPOSE[flat.size])
        kps.append(convert_layout(flat.reshape(1, -1, 3), source, spec, zero_ignored=False)[0])
    kp = np.stack(kps) if kps else np.zeros((0, spec.num_keypoints, 3))
    if kps and not np.any(spec.mapping_from(source) >= 0):
        raise InputError(path, f"OpenPose {source.name} shares no joint name with {spec.name}")
    return kp, _person_scores(kp), _no_boxes(len(kp))


def _read_mmpose_instances(items: Any, path: Path, spec: KeypointSpec, where: str,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's mmpose instances: keypoints (n, K, 3), scores (n,), boxes (n, 4) xywh."""
    if not isinstance(items, list):
        raise InputError(path, "must be a list of instances", field_name=where)
    K = spec.num_keypoints
    kps, boxes = np.zeros((len(items), K, 3)), np.full((len(items), 4), np.nan)
    for i, inst in enumerate(items):
        if not isinstance(inst, dict) or "keypoints" not in inst:
            raise InputError(path, "missing", i, f"{where}.keypoints")
        xy = _rows(inst["keypoints"], path, f"{where}[{i}].keypoints")
        if xy.ndim != 2:
            raise InputError(path, f"must be ({K}, 2) for spec {spec.name}, got {xy.shape}",
                             i, f"{where}.keypoints")
        s = _rows(inst.get("keypoint_scores", np.ones(len(xy)).tolist()), path,
                  f"{where}[{i}].keypoint_scores")
        if xy.shape != (K, 2) or s.shape != (K,):
            raise InputError(path, f"keypoints {xy.shape} and keypoint_scores {s.shape}; spec "
                             f"{spec.name} needs ({K}, 2) and ({K},)", i, f"{where}.keypoints")
        kps[i, :, :2], kps[i, :, 2] = xy, s
        if "bbox" in inst:
            b = _rows(inst["bbox"], path, f"{where}[{i}].bbox").reshape(-1)
            if b.size != 4:
                raise InputError(path, f"must have 4 values, got {b.size}", i, f"{where}.bbox")
            boxes[i] = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
    return kps, _person_scores(kps), boxes


def _mmpose_images(data: Any, path: Path) -> list[tuple[int | str, Any, str]]:
    """(key, instances, where) of each image of an mmpose file."""
    if isinstance(data, dict) and isinstance(data.get("predictions"), list):
        return [(i, p, f"predictions[{i}]") for i, p in enumerate(data["predictions"])]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "instances" in data[0]:
        out = []
        for i, frame in enumerate(data):
            if not isinstance(frame, dict) or "frame_id" not in frame:
                raise InputError(path, "missing", i, "frame_id")
            if type(frame["frame_id"]) is not int or frame["frame_id"] < 0:
                raise InputError(path, f"must be an integer >= 0, got {frame['frame_id']!r:.40}",
                                 i, "frame_id")
            out.append((frame["frame_id"], frame.get("instances"), f"[{i}].instances"))
        return out
    if isinstance(data, list):
        return [(path.stem, data, "instances")]
    raise InputError(path, f"not an mmpose file: expected {FORMATS['mmpose']}")


def _read_arrays(data: Any, path: Path, spec: KeypointSpec,
                 ) -> list[tuple[int | str, np.ndarray, np.ndarray]]:
    """(key, keypoints (n, K, 3), scores (n,)) of each image of an arrays file."""
    if not isinstance(data, dict):
        raise InputError(path, f"not an arrays file: expected {FORMATS['arrays']}")
    K, out = spec.num_keypoints, []
    for key, value in data.items():
        scores = None
        if isinstance(value, dict):
            if "keypoints" not in value:
                raise InputError(path, "missing", field_name=f"{key}.keypoints")
            scores = value.get("scores")
            value = value["keypoints"]
        kp = _rows(value, path, str(key))
        if kp.size == 0:
            kp = kp.reshape(0, K, 3)
        if kp.ndim != 3 or kp.shape[1] != K or kp.shape[2] not in (2, 3):
            raise InputError(path, f"must be (N, {K}, 2 or 3) for spec {spec.name}, got "
                             f"{kp.shape}", field_name=str(key))
        if kp.shape[2] == 2:
            kp = np.concatenate([kp, np.ones((*kp.shape[:2], 1))], axis=-1)
        s = _person_scores(kp) if scores is None else _rows(scores, path, f"{key}.scores")
        if s.shape != (len(kp),):
            raise InputError(path, f"must have {len(kp)} values", field_name=f"{key}.scores")
        out.append((str(key), kp, s))
    return out


def _folder_files(folder: Path) -> list[tuple[int | str, Any, Path]]:
    """(key, parsed JSON, file) of a folder of per-image files, in name order."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(folder, "folder holds no .json files")
    return [(re.sub(r"_keypoints$", "", f.stem), read_json(f), f) for f in files]


def _assemble(fmt: str, images: list[tuple[int | str, np.ndarray, np.ndarray, np.ndarray]],
              K: int) -> PoseFile:
    keys = [k for k, *_ in images]
    n = [len(kp) for _, kp, _, _ in images]
    dets = Detections(
        image_ids=np.repeat(np.arange(len(images), dtype=np.int64), n),
        keypoints=np.concatenate([kp for _, kp, _, _ in images]) if images
        else np.zeros((0, K, 3)),
        scores=np.concatenate([s for _, _, s, _ in images]) if images else np.zeros(0),
        boxes=np.concatenate([b for *_, b in images]) if images else np.zeros((0, 4)),
        category_ids=np.ones(sum(n), dtype=np.int64))
    return PoseFile(fmt, keys, dets)


def read_poses(path: str | Path, spec: KeypointSpec | str, format: str | None = None,
               images: dict[int, ImageInfo] | None = None, strict: bool = False,
               coco: Detections | None = None) -> PoseFile:
    """Read an estimator's poses (a file, or a folder of per-image files) in ``spec``'s
    layout; ``format`` None detects it. COCO results are read with
    :func:`posefix.io.load_results` (``images`` and ``strict`` as there); ``coco``: that
    file's every detection already read (``load_results(path, None)``), used instead where
    it has ``spec``'s keypoint count (:func:`posefix.io.keep_known`)."""
    path, spec = Path(path), load_spec(spec)
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    with malformed(path, keep=(SpecError,)):
        return _read_poses(path, spec, format, images, strict, coco)


def _read_poses(path: Path, spec: KeypointSpec, format: str | None,
                images: dict[int, ImageInfo] | None, strict: bool, coco: Detections | None
                ) -> PoseFile:
    """:func:`read_poses` of checked arguments."""
    fmt = format or sniff_format(path)
    if fmt == "coco" and not path.is_dir():
        if coco is not None and coco.keypoints.shape[1] == spec.num_keypoints:
            return _coco(keep_known(coco, path, images, strict))
        return _coco(load_results(path, spec, image_ids=images, strict=strict))
    K = spec.num_keypoints
    if path.is_dir():
        files = _folder_files(path)
        if fmt == "openpose":
            return _assemble(fmt, [(k, *_read_openpose(d, f, spec)) for k, d, f in files], K)
        if fmt == "mmpose":
            return _assemble(fmt, [(k, *_read_mmpose_instances(d, f, spec, "instances"))
                                   for k, d, f in files], K)
        raise _no_format(files[0][2])
    data = read_json(path)
    if fmt == "openpose":
        return _assemble(fmt, [(path.stem.removesuffix("_keypoints"),
                                *_read_openpose(data, path, spec))], K)
    if fmt == "mmpose":
        return _assemble(fmt, [(k, *_read_mmpose_instances(items, path, spec, where))
                               for k, items, where in _mmpose_images(data, path)], K)
    if fmt == "arrays":
        return _assemble(fmt, [(k, kp, s, _no_boxes(len(kp)))
                               for k, kp, s in _read_arrays(data, path, spec)], K)
    raise _no_format(path)


def _no_boxes(n: int) -> np.ndarray:
    return np.full((n, 4), np.nan)


def _coco(dets: Detections) -> PoseFile:
    keys, index = np.unique(dets.image_ids, return_inverse=True)
    dets.image_ids = index.reshape(-1).astype(np.int64)
    return PoseFile("coco", [int(k) for k in keys], dets)


# --------------------------------------------------------------------------- image keys
def _lookup(images: dict[int, ImageInfo]) -> dict[str, int]:
    """Image file name, base name and stem -> image id (the first image wins a clash)."""
    names: dict[str, int] = {}
    for info in images.values():
        p = Path(info.file_name)
        for name in (info.file_name, p.name, p.stem):
            names.setdefault(name, info.id)
    return names


def _image_id(key: int | str, images: dict[int, ImageInfo], names: dict[str, int]) -> int:
    """An integer key is an image id; a name is a file name, base name or stem, else an
    image id written as text; -1: no image."""
    if isinstance(key, int):
        return key if key in images else -1
    if key in names:
        return names[key]
    return int(key) if re.fullmatch(r"\d+", key) and int(key) in images else -1


def _key_ids(poses: PoseFile, images: dict[int, ImageInfo], frame_numbers: bool,
             ) -> np.ndarray:
    """The image id of each of the poses' keys (-1: none)."""
    names = _lookup(images)
    ids = np.array([_image_id(k, images, names) for k in poses.keys], dtype=np.int64)
    if frame_numbers:
        for i, key in enumerate(poses.keys):
            tail = re.search(r"(\d+)$", str(key))
            if ids[i] < 0 and tail and int(tail.group(1)) in images:
                ids[i] = int(tail.group(1))
    return ids


def image_keys(poses: PoseFile, images: dict[int, ImageInfo], frame_numbers: bool = False,
               ) -> dict[int, int | str]:
    """Image id -> the poses' own key for it (as :func:`to_detections` maps them)."""
    ids = _key_ids(poses, images, frame_numbers)
    return {int(i): k for k, i in zip(poses.keys, ids, strict=True) if i >= 0}


def to_arrays(detections: Detections, keys: dict[int, int | str]) -> dict[str, Any]:
    """Detections in the ``arrays`` format, ``{image: {keypoints: (N, K, 3), scores: (N,)}}``,
    keyed by each image id's key in ``keys`` (else the id), in order of appearance."""
    out: dict[str, Any] = {}
    by_image = np.argsort(detections.image_ids, kind="stable")  # one sort, not a scan per image
    ids, first, size = np.unique(detections.image_ids[by_image], return_index=True,
                                 return_counts=True)
    for g in np.argsort(by_image[first], kind="stable"):  # images in order of appearance
        image_id = int(ids[g])
        rows = by_image[first[g]:first[g] + size[g]]
        out[str(keys.get(image_id, image_id))] = {
            "keypoints": np.round(detections.keypoints[rows], 4).tolist(),
            "scores": detections.scores[rows].tolist()}
    return out


def to_detections(poses: PoseFile, images: dict[int, ImageInfo], source: str | Path = "",
                  strict: bool = False, frame_numbers: bool = False) -> Detections:
    """The poses with real image ids: an integer key is an image id (or frame index), a
    name is looked up by file name, base name or stem; with ``frame_numbers`` a name ending
    in digits (OpenPose's ``clip_000000000012``) is that frame. Keys of no image are
    skipped with a warning that counts their detections, or raise if ``strict``."""
    ids = _key_ids(poses, images, frame_numbers)
    dets = poses.detections
    found = ids[dets.image_ids] >= 0 if len(ids) else np.zeros(0, bool)
    if not found.all():
        unknown = [poses.keys[i] for i in np.flatnonzero(ids < 0)]
        if strict:
            raise InputError(source, f"{len(unknown)} image(s) not in the image list, e.g. "
                             f"{unknown[0]!r}", field_name="image")
        warnings.warn(f"{source}: skipped {int((~found).sum())} detection(s) of "
                      f"{len(unknown)} image(s) not in the image list, e.g. {unknown[0]!r}",
                      stacklevel=2)
    if found.all():  # the same arrays (no copy of a large file's poses)
        return Detections(ids[dets.image_ids], dets.keypoints, dets.scores, dets.boxes,
                          dets.category_ids)
    out = dets.select(found)
    out.image_ids = ids[out.image_ids]
    return out


def image_list_from_keys(keys: list[int | str], root: str | Path, source: str | Path = ""
                         ) -> dict[int, ImageInfo]:
    """An image list for name-keyed poses without one: each name is a file under ``root``
    (as given, or its stem with an image extension); ids are positions in ``keys``."""
    root = Path(root)
    out: dict[int, ImageInfo] = {}
    for i, key in enumerate(keys):
        name = str(key)
        if isinstance(key, int):
            raise InputError(source, f"image {key} is an id: pass --gt or --image-list to map "
                             "image ids to files")
        found = [root / name] if (root / name).is_file() else [
            root / (name + ext) for ext in _IMAGE_EXTENSIONS if (root / (name + ext)).is_file()]
        if not found:
            raise InputError(root / name, f"no image named {name!r} (or {name}.jpg, .png, ...) "
                             f"in {root}")
        out[i] = ImageInfo(i, str(found[0].relative_to(root)), 0, 0)
    return out
