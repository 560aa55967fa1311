"""Issue 21's ship bar, measured through the real ``posefix refine`` pipeline on the LSP
test split (800 persons; four real estimators' outputs PoseFix never trains on).

For a candidate checkpoint (``--set`` overrides its ``model.*`` decoding, as in
evaluate.py) and the shipped model, each input is refined twice with the default backend:
as ``posefix refine`` does by default (flip test, OKS-NMS, ``--score auto``), and with
``--score input --nms 0``, which keeps the input's person scores and every detection, so
that its AP gain is what the moved keypoints alone make. Per input, against the bar:

* AP at least the shipped model's;
* mean OKS above the input's, three ways: of the persons matched before and after (the
  like-for-like figure the bar is judged on), of every ground-truth person (0 where
  unmatched), and of whatever is matched (``posefix refine``'s summary: a person that
  refinement lifts over the matching threshold (OKS 0.1) enters it with a low OKS and
  lowers the mean, so it is shown, not judged on);
* keypoints fixed (an error before, good after) at least twice those made (good before,
  an error after), counted per ground-truth person;
* for the strong inputs (BlazePose, MoveNet), at least a third of the AP gain from the
  moved keypoints.

    .venv/bin/python recipes/demo/bar.py [--checkpoint CKPT] [--set model.KEY=VALUE ...]
        [--out runs/bar]   # ~3 min on 2 cores

The shipped model's refined files are kept in ``--out`` and reused by the next run there.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import DATA, with_overrides

from posefix.checkpoint import default_checkpoint_path
from posefix.commands.refine import refine_files
from posefix.comparison import compare_results, person_oks
from posefix.diagnosis import classify_keypoints
from posefix.evaluate import evaluate
from posefix.io import GroundTruth, load_ground_truth, load_results
from posefix.options import RefineFileOptions, RefineOptions
from posefix.taxonomy import ERROR_TYPES

INPUTS = {"BlazePose": "blazepose_gtboxes.json", "MoveNet MultiPose": "movenet_multipose.json",
          "PoseNet single": "posenet_gtboxes.json", "PoseNet multi": "posenet_multi.json"}
STRONG = ("BlazePose", "MoveNet MultiPose")


def refine(checkpoint: Path, gt: GroundTruth, results: Path, out: Path, backend: str,
           **options: Any) -> Path:
    if out.exists() and checkpoint == default_checkpoint_path():  # the shipped model's, kept
        return out
    out.unlink(missing_ok=True)
    refine_files(checkpoint, DATA / "lsp", results, out, gt=gt.path,
                 options=RefineFileOptions(RefineOptions(workers=0, **options),
                                           backend=backend, split="test", progress=False))
    return out


def measure(checkpoint: Path, gt: GroundTruth, results: Path, out: Path,
            backend: str) -> dict[str, Any]:
    """One checkpoint on one input: AP, moved-only AP, the OKS means, fixed and made
    (:func:`posefix.comparison.compare_results`: keypoints of the persons matched before and
    after)."""
    full = refine(checkpoint, gt, results, out / "refined.json", backend)
    moved = refine(checkpoint, gt, results, out / "moved.json", backend, score="input",
                   nms=0.0)
    before, after = (load_results(p, gt.spec, image_ids=gt.images) for p in (results, full))
    diagnoses = (classify_keypoints(gt, before), classify_keypoints(gt, after))
    c = compare_results(gt, before, after, diagnoses)
    every = [float(person_oks(gt, d, dg)[0].mean())  # 0 where unmatched
             for d, dg in zip((before, after), diagnoses, strict=True)]
    ch = c["error_changes"]
    return {"ap": c["ap_after"]["AP"],
            "moved_ap": evaluate(gt, load_results(moved, gt.spec, image_ids=gt.images))["AP"],
            "oks_both": tuple(c["mean_oks_both"]), "oks_all": tuple(every),
            "oks_matched": (c["mean_oks_before"], c["mean_oks_after"]),
            "fixed": sum(ch["fixed"].values()), "made": sum(ch["made"].values()),
            "by_type": {t: (ch["fixed"][t], ch["made"][t]) for t in ch["fixed"]}}


def verdict(name: str, ap0: float, r: dict[str, Any], shipped_ap: float) -> list[str]:
    """The bar's criteria this input misses (empty: met)."""
    share = (r["moved_ap"] - ap0) / max(r["ap"] - ap0, 1e-9)
    misses = [("AP under the shipped model's", r["ap"] < shipped_ap),
              ("mean OKS not above the input's", r["oks_both"][1] <= r["oks_both"][0]),
              ("fixed < 2 x made", r["fixed"] < 2 * r["made"]),
              ("moved keypoints < 1/3 of the gain", name in STRONG and share < 1 / 3)]
    return [m for m, failed in misses if failed]


def row(name: str, ap0: float, r: dict[str, Any], shipped_ap: float) -> str:
    misses = verdict(name, ap0, r, shipped_ap)
    cells = [f"{100 * ap0:.2f} -> {100 * r['ap']:.2f}", f"{100 * (r['moved_ap'] - ap0):+.2f}",
             *(f"{a:.4f} -> {b:.4f}" for a, b in (r["oks_both"], r["oks_all"],
                                                  r["oks_matched"])),
             f"{r['fixed']} / {r['made']}", "; ".join(misses) or "met"]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint_path())
    ap.add_argument("--set", nargs="*", default=[], metavar="model.KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("runs/bar"))
    ap.add_argument("--backend", default="auto", help="posefix refine --backend")
    args = ap.parse_args()
    gt = load_ground_truth(DATA / "lsp" / "coco17.json", split="test")
    header = ("| input | AP | AP from moved keypoints | mean OKS, matched before and after | "
              "mean OKS, every person | mean OKS, as matched | fixed / made | bar |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = {"shipped": [header], "candidate": [header]}
    types = [t for t in ERROR_TYPES if t != "good"]
    kinds = ["| input | model | " + " | ".join(f"{t} fixed / made" for t in types) + " |",
             "| --- | --- |" + " --- |" * len(types)]
    with tempfile.TemporaryDirectory() as tmp:
        candidate = with_overrides(args.checkpoint, args.set, Path(tmp))
        for name, file in INPUTS.items():
            results = DATA / "lsp" / file
            ap0 = evaluate(gt, load_results(results, gt.spec, image_ids=gt.images))["AP"]
            done = {}
            for label, ckpt in (("shipped", default_checkpoint_path()), ("candidate", candidate)):
                out = args.out / label / name.replace(" ", "_")
                out.mkdir(parents=True, exist_ok=True)
                done[label] = measure(ckpt, gt, results, out, args.backend)
            for label, r in done.items():
                lines[label].append(row(name, ap0, r, done["shipped"]["ap"]))
                kinds.append(f"| {name} | {label} | " + " | ".join(
                    "{} / {}".format(*r["by_type"][t]) for t in types) + " |")
            print(f"{name}: done", flush=True)
    text = "\n\n".join(f"{label} ({' '.join(args.set) or args.checkpoint}):\n\n" + "\n".join(t)
                       if label == "candidate" else f"{label}:\n\n" + "\n".join(t)
                       for label, t in lines.items())
    text += "\n\nKeypoints fixed and made per error type:\n\n" + "\n".join(kinds)
    (args.out / "bar.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
