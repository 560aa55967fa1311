"""Build the int8 calibration set shipped in ``posefix/assets/calibration/``.

64 network inputs of the shipped model (128x96 crops and their input poses, COCO-17), made
by the real refinement pipeline from *training* data only: the ground truth of LSP's
training split (im0001-im1000) turned into input poses by ``posefix.synthesis`` with the
demo recipe's error profile (``recipes/demo/profile.yaml``, seed 0), cropped as
``posefix refine`` crops them (``posefix.crops.CropDataset``, box from the pose, the
checkpoint's padding). Every 1000/64-th person is kept. The crops are stored as one JPEG
strip (quality 90, one crop under the other), the poses (crop pixels) and the provenance
in ``calibration.json``. No test image and no estimator's output goes in.

    OMP_NUM_THREADS=1 python recipes/demo/make_calibration.py    # ../shared beside the repo
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from posefix.checkpoint import default_checkpoint_path, load_checkpoint
from posefix.commands.synthesize import synthesize_file
from posefix.crops import CropDataset, group_by_image
from posefix.images import load_image_list
from posefix.io import load_results
from posefix.jsonfiles import atomic_write
from posefix.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
LSP = ROOT.parent / "shared" / "data" / "lsp"
OUT = ROOT / "src" / "posefix" / "assets" / "calibration"
PERSONS = 64
QUALITY = 90


def train_ground_truth(tmp: Path) -> Path:
    """LSP's COCO-17 ground truth restricted to its training split."""
    data = json.loads((LSP / "coco17.json").read_text())
    images = [im for im in data["images"] if im.get("split") == "train"]
    ids = {im["id"] for im in images}
    data.update(images=images, annotations=[a for a in data["annotations"]
                                            if a["image_id"] in ids])
    path = tmp / "lsp_train.json"
    path.write_text(json.dumps(data))
    return path


def main() -> None:
    """Write crops.jpg and calibration.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    ckpt = load_checkpoint(default_checkpoint_path())
    spec, size = ckpt.spec, ckpt.model.input_size
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        gt = train_ground_truth(tmp)
        synth = tmp / "synth.json"
        synthesize_file(gt, synth, spec=spec,
                        profile=load_profile(ROOT / "recipes/demo/profile.yaml"), seed=0)
        infos = load_image_list(gt)
        dets = load_results(synth, spec, image_ids=infos)
    tasks = group_by_image(dets.image_ids, 64)  # rows of dets as they are
    paths = {i: LSP / infos[i].file_name for i in infos}
    ds = CropDataset(tasks, dets.keypoints, dets.boxes, paths, {}, spec, size,
                     ckpt.config.data.bbox_padding, "pose", "auto")
    items = [ds[i] for i in range(len(ds))]
    crops = np.concatenate([it["crops"] for it in items])
    poses = np.concatenate([it["poses"] for it in items])
    keep = np.linspace(0, len(crops) - 1, PERSONS).round().astype(int)
    meta = {
        "format": "posefix-calibration/1",
        "input_size": list(size),
        "spec": spec.name,
        "count": PERSONS,
        "source": "LSP training split (im0001-im1000) ground truth, synthesized input poses "
                  "(recipes/demo/profile.yaml, seed 0), cropped by posefix.crops as refine "
                  f"does (box from the pose, padding {ckpt.config.data.bbox_padding}); every "
                  f"{len(crops) / PERSONS:g}-th of {len(crops)} persons; JPEG quality "
                  f"{QUALITY}; made by recipes/demo/make_calibration.py",
        "poses": np.round(poses[keep].astype(np.float64), 3).tolist(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    strip = Image.fromarray(np.concatenate(list(crops[keep]), axis=0))
    atomic_write(args.out / "crops.jpg", lambda f: strip.save(f, "JPEG", quality=QUALITY),
                 binary=True)
    atomic_write(args.out / "calibration.json", lambda f: f.write(json.dumps(meta)))
    print(f"wrote {args.out} ({PERSONS} crops of {size[0]}x{size[1]})")


if __name__ == "__main__":
    main()
