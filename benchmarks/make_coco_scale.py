"""COCO-sized annotation and results files, made by tiling the shared COCO sample.

Every new image reuses one of the four image files of ``../shared/data/coco`` under a new
image id (file names relative to ``../shared/data``, so ``images: ../shared/data``); its
persons are the source image's persons (and more, shifted copies of them, where an image
holds more persons than its source), each moved, scaled and jittered so that no two
annotations are identical. Segmentation polygons are kept (moved with their person), so
the files have COCO's bytes per annotation (about 1 kB) and parse like the real ones.

Presets have COCO 2017's counts (``person_keypoints_*2017.json``):

======== ======= ============================ ===================== ===========
preset   images  images with keypoints        persons w/ keypoints  annotations
======== ======= ============================ ===================== ===========
train    64,115  56,599                       149,813               262,465
val      5,000   2,693                        6,352                 11,004
testdev  20,288  (image list only)            --                    --
======== ======= ============================ ===================== ===========

::

    python benchmarks/make_coco_scale.py train --out runs/scale/train2017.json
    python benchmarks/make_coco_scale.py val --out runs/scale/val2017.json \\
        --results 100000 --results-out runs/scale/val2017_dets100k.json
    python benchmarks/make_coco_scale.py testdev --out runs/scale/testdev.json \\
        --results 500000 --results-out runs/scale/testdev_dets500k.json

Results are detections of the file's persons: one per person with keypoint noise (scores
0.5-1), then duplicates with more noise and false positives (random poses) up to the
count requested, spread over the images (``testdev``: persons are generated as for the
other presets but only the image list is written). Nothing here goes into git: write under
``runs/`` or ``/tmp``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCE = SHARED / "coco" / "test_coco.json"

PRESETS = {  # images, images with keypointed persons, keypointed persons, annotations
    "train": (64_115, 56_599, 149_813, 262_465),
    "val": (5_000, 2_693, 6_352, 11_004),
    "testdev": (20_288, 20_288, 50_000, 50_000),
}


def _sources() -> list[dict]:
    """The source images with their keypointed and unlabelled persons."""
    data = json.loads(SOURCE.read_text())
    out = []
    for im in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        out.append({
            "file_name": f"coco/{im['file_name']}", "width": im["width"],
            "height": im["height"],
            "labelled": [a for a in anns if a["num_keypoints"] > 0],
            "unlabelled": [a for a in anns if a["num_keypoints"] == 0],
        })
    return out


def _split(total: int, bins: int, rng: np.random.Generator, cap: int) -> np.ndarray:
    """``total`` items over ``bins`` bins, at least one each, a long tail (lognormal
    weights, as COCO's crowded images), at most ``cap`` per bin."""
    if bins == 0:
        return np.zeros(0, dtype=np.int64)
    w = rng.lognormal(0.0, 1.0, bins)
    counts = 1 + rng.multinomial(total - bins, w / w.sum())
    over = np.maximum(counts - cap, 0).sum()
    counts = np.minimum(counts, cap)
    while over:  # spread what the cap cut off over bins with room
        room = np.flatnonzero(counts < cap)
        add = rng.choice(room, size=min(over, len(room)), replace=False)
        counts[add] += 1
        over -= len(add)
    return counts


def _moved(ann: dict, dx: float, dy: float, s: float, cx: float, cy: float, w: int, h: int,
           rng: np.random.Generator, labelled: bool, new_id: int, image_id: int) -> dict:
    """A copy of ``ann`` scaled by ``s`` about (cx, cy), then moved by (dx, dy), with
    keypoint jitter; coordinates clipped to the image."""

    def tx(x: np.ndarray) -> np.ndarray:
        return np.clip((x - cx) * s + cx + dx, 0, w - 1)

    def ty(y: np.ndarray) -> np.ndarray:
        return np.clip((y - cy) * s + cy + dy, 0, h - 1)

    kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    if labelled:
        v = kp[:, 2].copy()
        lab = v > 0
        # Drop a keypoint now and then (never the last one) so counts vary too.
        drop = lab & (rng.random(len(v)) < 0.05)
        if (lab & ~drop).any():
            v[drop] = 0
        x = np.round(tx(kp[:, 0]) + rng.normal(0, 1.5, len(v)))
        y = np.round(ty(kp[:, 1]) + rng.normal(0, 1.5, len(v)))
        x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
        kp = np.stack([np.where(v > 0, x, 0), np.where(v > 0, y, 0), v], 1)
        num = int((v > 0).sum())
    else:
        kp = np.zeros_like(kp)
        num = 0
    bx, by, bw, bh = ann["bbox"]
    x0, y0 = float(tx(np.array(bx))), float(ty(np.array(by)))
    x1, y1 = float(tx(np.array(bx + bw))), float(ty(np.array(by + bh)))
    segs = []
    for poly in ann["segmentation"]:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        segs.append(np.round(np.stack([tx(p[:, 0]), ty(p[:, 1])], 1), 2).reshape(-1).tolist())
    return {
        "segmentation": segs, "num_keypoints": num,
        "area": round(float(ann["area"]) * s * s, 4), "iscrowd": 0,
        "keypoints": [int(v) for v in kp.reshape(-1)], "image_id": image_id,
        "bbox": [round(x0, 2), round(y0, 2), round(max(x1 - x0, 1.0), 2),
                 round(max(y1 - y0, 1.0), 2)],
        "category_id": 1, "id": new_id,
    }


def make_annotations(images: int, with_kp: int, persons: int, annotations: int,
                     seed: int = 0, first_image_id: int = 1) -> dict:
    """A COCO keypoint annotation dict of the given counts (see the module docstring)."""
    rng = np.random.default_rng(seed)
    src = _sources()
    kp_counts = _split(persons, with_kp, rng, cap=30)
    unl = annotations - persons
    # Unlabelled persons: on the images without keypointed persons (one at least), the
    # rest anywhere.
    no_kp = images - with_kp
    unl_counts = np.zeros(images, dtype=np.int64)
    if no_kp:
        unl_counts[with_kp:] = _split(min(unl, max(no_kp, unl // 4)), no_kp, rng, cap=20)
    rest = unl - unl_counts.sum()
    if rest > 0:
        unl_counts += rng.multinomial(rest, np.full(images, 1.0 / images))
    order = rng.permutation(images)  # keypointed and empty images interleaved by id
    out_images, anns = [], []
    ann_id = 1
    for slot in range(images):
        image_id = first_image_id + int(order[slot])
        s = src[slot % len(src)]
        w, h = s["width"], s["height"]
        out_images.append({"license": 1, "file_name": s["file_name"], "coco_url": "",
                           "height": h, "width": w, "date_captured": "", "flickr_url": "",
                           "id": image_id})
        n_kp = int(kp_counts[slot]) if slot < with_kp else 0
        for j in range(n_kp):
            a = s["labelled"][j % len(s["labelled"])]
            bx, by, bw, bh = a["bbox"]
            if j < len(s["labelled"]):  # the source's own persons, slightly moved
                dx, dy, sc = rng.normal(0, 0.03 * bw), rng.normal(0, 0.03 * bh), \
                    rng.uniform(0.95, 1.05)
            else:  # more persons: shifted copies, partly overlapping their source
                dx = rng.choice([-1, 1]) * rng.uniform(0.3, 0.9) * bw
                dy = rng.normal(0, 0.1 * bh)
                sc = rng.uniform(0.6, 1.0)
            anns.append(_moved(a, dx, dy, sc, bx + bw / 2, by + bh / 2, w, h, rng, True,
                               ann_id, image_id))
            ann_id += 1
        pool = s["unlabelled"] or s["labelled"]
        for _ in range(int(unl_counts[slot])):
            a = pool[int(rng.integers(len(pool)))]
            bx, by, bw, bh = a["bbox"]
            sc = rng.uniform(0.2, 0.8)
            dx, dy = rng.uniform(-0.4, 0.4) * w, rng.uniform(-0.3, 0.3) * h
            anns.append(_moved(a, dx, dy, sc, bx + bw / 2, by + bh / 2, w, h, rng, False,
                               ann_id, image_id))
            ann_id += 1
    cats = json.loads(SOURCE.read_text())["categories"]
    return {"info": {"description": f"COCO-sized tiling of {SOURCE.name} (seed {seed})"},
            "licenses": [{"id": 1, "name": "see ../shared/README.md", "url": ""}],
            "images": out_images, "annotations": anns, "categories": cats}


def make_results(gt: dict, count: int, seed: int = 0) -> list[dict]:
    """``count`` detections on ``gt``'s images: one noisy copy of each keypointed person
    (as many as ``count`` allows), then duplicates with more noise and false positives."""
    rng = np.random.default_rng(seed + 1)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    people = [a for a in gt["annotations"] if a["num_keypoints"] > 0]
    ids = np.array([im["id"] for im in gt["images"]])
    out = []

    def det(image_id: int, xy: np.ndarray, score: float) -> dict:
        w, h = sizes[image_id]
        x = np.clip(xy[:, 0], 0, w - 1)
        y = np.clip(xy[:, 1], 0, h - 1)
        conf = rng.uniform(0.05, 1.0, len(xy))
        kp = np.stack([x, y, conf], 1).round(3).reshape(-1)
        return {"image_id": int(image_id), "category_id": 1, "keypoints": kp.tolist(),
                "score": round(float(score), 5)}

    def noisy(a: dict, scale: float) -> np.ndarray:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        bx, by, bw, bh = a["bbox"]
        # Unlabelled keypoints: somewhere in the box (an estimator always answers).
        guess = np.stack([bx + rng.uniform(0, 1, len(kp)) * bw,
                          by + rng.uniform(0, 1, len(kp)) * bh], 1)
        xy = np.where(kp[:, 2:] > 0, kp[:, :2], guess)
        return xy + rng.normal(0, scale * np.sqrt(max(a["area"], 1.0)), xy.shape)

    for a in people[:count]:
        out.append(det(a["image_id"], noisy(a, 0.03), rng.uniform(0.5, 1.0)))
    while len(out) < count:
        if people and rng.random() < 0.5:  # a duplicate, worse and lower-scored
            a = people[int(rng.integers(len(people)))]
            out.append(det(a["image_id"], noisy(a, 0.15), rng.uniform(0.05, 0.6)))
        else:  # a false positive: a random pose in a random box of a random image
            image_id = int(ids[rng.integers(len(ids))])
            w, h = sizes[image_id]
            bw, bh = rng.uniform(20, w / 2), rng.uniform(40, h / 1.5)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            xy = np.stack([x0 + rng.uniform(0, bw, 17), y0 + rng.uniform(0, bh, 17)], 1)
            out.append(det(image_id, xy, rng.uniform(0.01, 0.5)))
    order = rng.permutation(len(out))  # not grouped by image, as real files need not be
    return [out[i] for i in order]


def scale_annotations(gt: dict, s: float, image_root: Path) -> dict:
    """``gt`` on copies of the source images resized by ``s`` (written under
    ``image_root/coco/``): every coordinate scaled, areas by ``s**2``. The same persons and
    the same work per sample, less JPEG decoding: for long memory runs."""
    import cv2

    (image_root / "coco").mkdir(parents=True, exist_ok=True)
    for src in _sources():
        img = cv2.imread(str(SHARED / src["file_name"]))
        small = cv2.resize(img, (round(src["width"] * s), round(src["height"] * s)),
                           interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(image_root / src["file_name"]), small)
    for im in gt["images"]:
        im["width"], im["height"] = round(im["width"] * s), round(im["height"] * s)
    for a in gt["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        kp[:, :2] = np.where(kp[:, 2:] > 0, np.round(kp[:, :2] * s, 2), 0)
        a["keypoints"] = kp.reshape(-1).tolist()
        a["bbox"] = [round(v * s, 2) for v in a["bbox"]]
        a["area"] = round(a["area"] * s * s, 4)
        a["segmentation"] = [[round(v * s, 2) for v in poly] for poly in a["segmentation"]]
    return gt


def write(obj: object, path: Path) -> None:
    """JSON without spaces (as COCO's files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        json.dump(obj, f, separators=(",", ":"))


def main() -> None:
    """Write the files a preset describes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, type=Path, help="annotation (or image list) JSON")
    ap.add_argument("--results", type=int, default=0, help="also write this many detections")
    ap.add_argument("--results-out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-scale", type=float, default=None,
                    help="resize the images by this factor into --image-root (and scale "
                         "every coordinate): cheaper samples for long memory runs")
    ap.add_argument("--image-root", type=Path, default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    images, with_kp, persons, annotations = PRESETS[a.preset]
    gt = make_annotations(images, with_kp, persons, annotations, a.seed,
                          first_image_id=1 if a.preset != "testdev" else 10_000_000)
    if a.image_scale is not None:
        if a.image_root is None:
            ap.error("--image-scale needs --image-root")
        gt = scale_annotations(gt, a.image_scale, a.image_root)
    if a.results:
        if a.results_out is None:
            ap.error("--results needs --results-out")
        write(make_results(gt, a.results, a.seed), a.results_out)
    if a.preset == "testdev":
        gt = {"images": gt["images"], "categories": gt["categories"]}
    write(gt, a.out)
    n_kp = sum(1 for x in gt.get("annotations", []) if x["num_keypoints"] > 0)
    print(f"{a.out}: {len(gt['images'])} images, {len(gt.get('annotations', []))} "
          f"annotations ({n_kp} with keypoints), {a.out.stat().st_size / 2**20:.1f} MiB"
          + (f"; {a.results_out}: {a.results} detections, "
             f"{a.results_out.stat().st_size / 2**20:.1f} MiB" if a.results else "")
          + f" ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
