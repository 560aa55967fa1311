"""mmpose's MPII JSON list form converted to a COCO keypoint annotation dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, malformed
from .fields import number_array
from .jsonfiles import read_json
from .spec import KeypointSpec, load_spec

__all__ = ["convert_mpii", "mpii_to_coco"]


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
        return mpii_to_coco(data, path, spec)


def mpii_to_coco(data: Any, path: Path, spec: KeypointSpec) -> dict[str, Any]:
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
        joints = number_array([v for j in e["joints"] for v in j], path, i, "joints")
        if joints.size != 2 * K:
            raise InputError(path, f"has {joints.size // 2} joints; spec needs {K}", i, "joints")
        vis = number_array(e["joints_vis"], path, i, "joints_vis").reshape(K) > 0
        joints = joints.reshape(K, 2)
        kp = np.zeros((K, 3))
        kp[vis, :2] = joints[vis]
        kp[vis, 2] = 2
        name = str(e["image"])
        img_id = images.setdefault(name, len(images) + 1)
        cx, cy = number_array(e["center"], path, i, "center")
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
