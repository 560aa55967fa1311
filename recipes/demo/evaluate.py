"""Measure a refiner on the held-out images of the demo split (recipes/demo/split.yaml).

Inputs, none of them seen in training: poses synthesized from the held-out ground truth
(fixed seed), and two real estimators' outputs that PoseFix never trains on (MediaPipe
BlazePose on ground-truth and on detector boxes; MoveNet MultiPose, bottom-up). Prints a
markdown table of AP before/after refinement, the mean OKS of the detections matched to a
person (a finer measure than AP on a few persons: it does not jump with thresholds and
ranking) and the keypoint errors before/after.

    .venv/bin/python recipes/demo/evaluate.py [--checkpoint CKPT] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posefix.io import read_json, write_json_atomic
from posefix.refine import refine_files
from posefix.synthesis import synthesize_file

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
HELD_OUT = {"coco": ["000000040083.jpg", "000000196141.jpg"], "ochuman": ["003896.jpg"]}
GT = {"coco": "coco/test_coco.json", "ochuman": "ochuman/test_ochuman.json"}
INPUTS = {
    "coco": ["blazepose_gtboxes.json", "blazepose_detboxes.json", "movenet_multipose.json"],
    "ochuman": ["blazepose_gtboxes.json", "movenet_multipose.json"],
}
TYPES = ("good", "jitter", "inversion", "swap", "miss")


def _subset(dataset: str, tmp: Path) -> tuple[Path, set[int]]:
    data = read_json(DATA / GT[dataset])
    ids = {i["id"] for i in data["images"] if i["file_name"] in HELD_OUT[dataset]}
    data["images"] = [i for i in data["images"] if i["id"] in ids]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    return write_json_atomic(tmp / f"{dataset}_held_out.json", data), ids


def main() -> None:
    """Refine every held-out input and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped demo model")
    ap.add_argument("--out", default="runs/demo_eval")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in HELD_OUT:
        gt, ids = _subset(dataset, out)
        inputs = {"synthesized (seed 0)": synthesize_file(gt, out / f"{dataset}_synth.json",
                                                          seed=0)}
        for name in INPUTS[dataset]:
            dets = [d for d in read_json(DATA / dataset / name) if d["image_id"] in ids]
            inputs[name.removesuffix(".json")] = write_json_atomic(
                out / f"{dataset}_{name}", dets)
        for label, path in inputs.items():
            refined = out / f"{dataset}_{Path(path).stem}_refined.json"
            s = refine_files(checkpoint=args.checkpoint, images=DATA / dataset, results=path,
                             out=refined, gt=gt, workers=0, progress=False)
            rows.append({"dataset": dataset, "input": label,
                         "ap_before": s["ap_before"]["AP"], "ap_after": s["ap_after"]["AP"],
                         "oks_before": s["mean_oks_before"], "oks_after": s["mean_oks_after"],
                         "errors_before": s["errors_before"], "errors_after": s["errors_after"]})
    write_json_atomic(out / "results.json", rows, indent=2)
    print("| held-out images | input | AP before | AP after | mean OKS before -> after | " +
          " | ".join(f"{t} before -> after" for t in TYPES) + " |")
    print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in TYPES) + " |")
    for r in rows:
        errs = " | ".join(f"{r['errors_before'][t]} -> {r['errors_after'][t]}" for t in TYPES)
        print(f"| {r['dataset']} | {r['input']} | {r['ap_before']:.3f} | {r['ap_after']:.3f} | "
              f"{r['oks_before']:.3f} -> {r['oks_after']:.3f} | {errs} |")
    print(json.dumps({"written": str(out / "results.json")}))


if __name__ == "__main__":
    main()
