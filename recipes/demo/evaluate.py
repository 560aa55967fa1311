"""Measure a refiner on the held-out data of the demo recipe (recipes/demo/split.yaml).

Two suites, none of their images seen in training:

* ``lsp``: the 800 test persons of Leeds Sports Pose (``lsp/coco17.json``, split test), with
  poses synthesized from their ground truth (fixed seed) and four real estimators' outputs
  that PoseFix never trains on: BlazePose and PoseNet single-pose on the ground-truth boxes,
  MoveNet MultiPose and PoseNet multi-person on the whole image.
* ``multi``: the 3 held-out multi-person images (2 COCO, 1 OCHuman), with synthesized poses,
  BlazePose (ground-truth and detector boxes) and MoveNet MultiPose.

Prints markdown tables: AP before -> after, the mean OKS of the detections matched to a
person (finer than AP: it does not jump with thresholds and ranking), the keypoint error
counts before -> after, and per joint the change of the mean keypoint similarity (KS) of
the persons matched both before and after (x 1000; positive: the joint gained).

    .venv/bin/python recipes/demo/evaluate.py [--checkpoint CKPT] [--suite lsp multi]
        [--out DIR] [--set model.error_gate=0.5 ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import DATA, SUITES, held_out_subset, with_overrides

from posefix.checkpoint import default_checkpoint_path
from posefix.commands.refine import refine_files
from posefix.commands.synthesize import synthesize_file
from posefix.diagnosis import classify_keypoints
from posefix.io import load_ground_truth, load_results
from posefix.jsonfiles import read_json, write_json_atomic
from posefix.options import RefineFileOptions, RefineOptions
from posefix.taxonomy import ERROR_TYPES


def per_keypoint_ks(gt_path: Path, before: Path, after: Path) -> dict[str, float]:
    """Per joint: mean KS after minus before (x 1000) over persons matched in both."""
    gt = load_ground_truth(gt_path)
    db = classify_keypoints(gt, load_results(before, gt.spec, image_ids=gt.images))
    da = classify_keypoints(gt, load_results(after, gt.spec, image_ids=gt.images))
    _, ib, ia = np.intersect1d(db.gt_index, da.gt_index, return_indices=True)
    kb, ka = db.ks[ib], da.ks[ia]
    out = {}
    for k, name in enumerate(gt.spec.keypoints):
        ok = np.isfinite(kb[:, k]) & np.isfinite(ka[:, k])
        if ok.any():
            out[name] = float(1000 * (ka[ok, k] - kb[ok, k]).mean())
    return out


def run_suite(checkpoint: Path, suite: str, out: Path) -> list[dict[str, Any]]:
    """Refine every input of a suite; one row of numbers per input."""
    rows = []
    for entry in SUITES[suite]:
        gt, ids = held_out_subset(entry, out)
        inputs = {"synthesized (seed 0)": synthesize_file(gt, out / f"{entry['name']}_synth.json",
                                                          seed=0)}
        for name in entry["inputs"]:
            dets = [d for d in read_json(DATA / Path(entry["gt"]).parent / name)
                    if d["image_id"] in ids]
            inputs[name.removesuffix(".json")] = write_json_atomic(
                out / f"{entry['name']}_{name}", dets)
        for label, path in inputs.items():
            refined = out / f"{Path(path).stem}_refined.json"
            s = refine_files(checkpoint, DATA / Path(entry["gt"]).parent, path, refined, gt=gt,
                             options=RefineFileOptions(RefineOptions(workers=0),
                                                       progress=False))
            rows.append({
                "set": entry["name"], "input": label,
                "ap_before": s["ap_before"]["AP"], "ap_after": s["ap_after"]["AP"],
                "oks_before": s["mean_oks_before"], "oks_after": s["mean_oks_after"],
                "errors_before": s["errors_before"], "errors_after": s["errors_after"],
                "per_keypoint": per_keypoint_ks(gt, Path(path), refined),
            })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The tables of a run: AP, mean OKS, error counts; per-joint KS changes."""
    lines = ["| set | input | AP before | AP after | mean OKS | "
             + " | ".join(ERROR_TYPES) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in ERROR_TYPES) + " |"]
    for r in rows:
        errs = " | ".join(f"{r['errors_before'][t]} -> {r['errors_after'][t]}"
                          for t in ERROR_TYPES)
        lines.append(f"| {r['set']} | {r['input']} | {100 * r['ap_before']:.1f} | "
                     f"{100 * r['ap_after']:.1f} | {r['oks_before']:.3f} -> "
                     f"{r['oks_after']:.3f} | {errs} |")
    joints = sorted({j for r in rows for j in r["per_keypoint"]},
                    key=lambda j: list(rows[0]["per_keypoint"]).index(j)
                    if j in rows[0]["per_keypoint"] else 99)
    lines += ["", "Mean KS change per joint (x 1000, persons matched before and after):", "",
              "| set | input | " + " | ".join(joints) + " |",
              "| --- | --- | " + " | ".join("---" for _ in joints) + " |"]
    for r in rows:
        vals = " | ".join(f"{r['per_keypoint'][j]:+.0f}" if j in r["per_keypoint"] else ""
                          for j in joints)
        lines.append(f"| {r['set']} | {r['input']} | {vals} |")
    return "\n".join(lines)


def main() -> None:
    """Refine every held-out input and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped demo model")
    ap.add_argument("--suite", nargs="+", default=list(SUITES), choices=list(SUITES))
    ap.add_argument("--out", default="runs/demo_eval")
    ap.add_argument("--set", nargs="*", default=[], metavar="model.KEY=VALUE",
                    help="decoding overrides, e.g. model.error_gate=0.5")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint_path()
    with tempfile.TemporaryDirectory() as tmp:
        ck = with_overrides(checkpoint, args.set, Path(tmp))
        rows = [r for suite in args.suite for r in run_suite(ck, suite, out)]
    write_json_atomic(out / "results.json", rows, indent=2)
    print(markdown(rows))
    print(json.dumps({"written": str(out / "results.json")}))


if __name__ == "__main__":
    main()
