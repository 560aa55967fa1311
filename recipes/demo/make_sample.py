"""Add the LSP part of ``posefix demo``'s embedded sample (src/posefix/assets/sample/lsp/).

Every 20th image of the Leeds Sports Pose test split (im1001, im1021, ..., im1781: 40
images, never trained on), their ground truth in the COCO-17 layout (``lsp/coco17.json``)
and three real estimators' poses on them that PoseFix never trains on: BlazePose on the
ground-truth boxes, MoveNet MultiPose on the whole image, and the weak PoseNet single-pose
on the ground-truth boxes (where refinement visibly puts limbs back).

    .venv/bin/python recipes/demo/make_sample.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from posefix.jsonfiles import read_json, write_json_atomic

REPO = Path(__file__).resolve().parents[2]
LSP = REPO.parent / "shared" / "data" / "lsp"
OUT = REPO / "src" / "posefix" / "assets" / "sample" / "lsp"
IDS = range(1001, 1801, 20)
ESTIMATORS = {"blazepose.json": "blazepose_gtboxes.json", "movenet.json": "movenet_multipose.json",
              "posenet.json": "posenet_gtboxes.json"}


def main() -> None:
    """Write images, annotations.json and the estimators' results."""
    gt = read_json(LSP / "coco17.json")
    keep = {i["id"]: i for i in gt["images"] if i["id"] in IDS}
    assert all(i["split"] == "test" for i in keep.values()) and len(keep) == len(IDS)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    for info in keep.values():
        shutil.copyfile(LSP / info["file_name"], OUT / info["file_name"])
    gt["info"] = {"description": "posefix embedded sample, LSP part: every 20th image of the "
                  "Leeds Sports Pose test split (Johnson & Everingham, BMVC 2010), never "
                  "trained on; COCO-17 layout, face unlabelled; images keep their terms."}
    gt["images"] = list(keep.values())
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    write_json_atomic(OUT / "annotations.json", gt)
    for name, source in ESTIMATORS.items():
        dets = [d for d in read_json(LSP / source) if d["image_id"] in keep]
        write_json_atomic(OUT / name, dets)
        print(f"{name}: {len(dets)} detections")
    print(f"wrote {len(keep)} images to {OUT}")


if __name__ == "__main__":
    main()
