"""The README's results rows: a checkpoint's AP change on LSP test and the COCO-like check,
split into refinement's three steps, each applied in turn through the real ``posefix
refine`` pipeline on the default backend: the **moved keypoints** (the input's person
scores, no NMS), then the **new person scores**, then **OKS-NMS** (the defaults).

    .venv/bin/python recipes/demo/parts.py [--checkpoint CKPT] [--out runs/parts]  # ~5 min

Prints one Markdown row per input: persons (ground-truth persons with a labelled keypoint),
AP before, AP after, and the three parts (which add up to the change).
"""

from __future__ import annotations

import argparse
from itertools import pairwise
from pathlib import Path

from bar_coco import INPUTS, pooled
from common import DATA

from posefix.checkpoint import default_checkpoint_path
from posefix.commands.refine import refine_files
from posefix.evaluate import evaluate
from posefix.io import load_ground_truth, load_results
from posefix.options import RefineFileOptions, RefineOptions

LSP = {"BlazePose, ground-truth boxes": "blazepose_gtboxes.json",
       "MoveNet MultiPose": "movenet_multipose.json",
       "PoseNet single-pose, ground-truth boxes": "posenet_gtboxes.json",
       "PoseNet multi-person": "posenet_multi.json"}
COCO = dict(zip(LSP, ("BlazePose", "MoveNet MultiPose", "PoseNet single", "PoseNet multi"),
                strict=True))
STEPS = ({"score": "input", "nms": 0.0}, {"nms": 0.0}, {})


def row(label: str, checkpoint: Path, gt_path: Path, images: Path, results: Path,
        out: Path, split: str | None = None) -> str:
    """One input's row: AP before and after, and the change of each step."""
    gt = load_ground_truth(gt_path, split=split, spec="coco17")
    aps = [evaluate(gt, load_results(results, gt.spec, image_ids=gt.images))["AP"]]
    out.mkdir(parents=True, exist_ok=True)
    for k, step in enumerate(STEPS):
        refined = out / f"step{k}.json"
        refined.unlink(missing_ok=True)
        refine_files(checkpoint, images, results, refined, gt=gt_path,
                     options=RefineFileOptions(RefineOptions(workers=0, **step), split=split,
                                               progress=False))
        aps.append(evaluate(gt, load_results(refined, gt.spec, image_ids=gt.images))["AP"])
    persons = int(gt.counted.sum())
    parts = " | ".join(f"{b - a:+.3f}" for a, b in pairwise(aps))
    return f"| {label} | {persons} | {aps[0]:.3f} | {aps[-1]:.3f} | {parts} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint_path())
    ap.add_argument("--out", type=Path, default=Path("runs/parts"))
    args = ap.parse_args()
    for label, file in LSP.items():
        print(row(f"LSP test: {label}", args.checkpoint, DATA / "lsp" / "coco17.json",
                  DATA / "lsp", DATA / "lsp" / file, args.out / "lsp" / file, "test"),
              flush=True)
    for label, name in COCO.items():
        spec = INPUTS[name]
        gt, images, results = pooled(spec["sets"], spec["file"], args.out / "coco")
        print(row(f"COCO-like: {label}", args.checkpoint, gt, images, results,
                  args.out / "coco" / spec["file"]), flush=True)


if __name__ == "__main__":
    main()
