"""Measure the error-kind fixes (posefix.fixes) of a kind-head checkpoint on the held-out
inputs of evaluate.py, many settings from one network pass per input.

Each input goes through the real refine pipeline once (flip test, pose crops) with the
network's gate off and a recording ``fix`` callable, which keeps, per detection, its input
keypoints, the heatmaps' keypoints, the kind probabilities and the area. Each setting then
fixes the recorded keypoints (:func:`posefix.fixes.fix_keypoints`), scores the persons
(``quality``: the input score x mean P(not gross) as ``posefix refine``; ``input``: the
input's score, which shows the part of the AP gain that moved keypoints make), runs the
pipeline's OKS-NMS (0.9) and compares with the ground truth (AP, mean OKS of the matched
detections, keypoints fixed and made per error type).

    .venv/bin/python recipes/demo/sweep_fixes.py --checkpoint runs/kinds/final.pt
        [--suite lsp multi] [--out DIR] [--grid small|full] [--inputs NAME ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import DATA, SUITES, held_out_subset

from posefix.checkpoint import load_checkpoint
from posefix.commands.synthesize import synthesize_file
from posefix.comparison import compare_results
from posefix.diagnosis import classify_keypoints
from posefix.fixes import FixOptions, fix_keypoints
from posefix.io import Detections, load_ground_truth, load_results
from posefix.jsonfiles import read_json, write_json_atomic
from posefix.options import RefineOptions
from posefix.refine import refine_detections
from posefix.similarity import oks_nms
from posefix.taxonomy import ERROR_TYPES


class Recorder:
    """A ``fix`` callable that keeps what it is given, by the detection's input keypoints."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple[np.ndarray, np.ndarray, float]] = {}

    def __call__(self, inputs: np.ndarray, refined: np.ndarray, kinds: np.ndarray,
                 areas: np.ndarray, spec: Any) -> np.ndarray:
        for i in range(len(inputs)):
            self.rows[inputs[i].tobytes()] = (refined[i], kinds[i], float(areas[i]))
        return refined


def capture(ck: Any, gt_path: Path, input_path: Path, images: Path) -> dict[str, Any]:
    """One pass of the network over an input: what each setting needs."""
    truth = load_ground_truth(gt_path, spec=ck.spec, image_root=images)
    dets = load_results(input_path, ck.spec, image_ids=truth.images)
    paths = {i: truth.image_path(i) for i in np.unique(dets.image_ids).tolist()}
    rec = Recorder()
    opts = RefineOptions(nms=0.0, score="quality", workers=0, fix=rec)
    out, _ = refine_detections(dets, paths, ck, ck.spec, opts)
    n, k = dets.keypoints.shape[:2]
    refined = dets.keypoints[..., :2].copy()
    kinds = np.zeros((n, k, 5))
    kinds[..., 0] = 1.0
    areas = np.ones(n)
    done = np.zeros(n, dtype=bool)
    for i in range(n):
        got = rec.rows.get(dets.keypoints[i].tobytes())
        if got is not None:
            refined[i], kinds[i], areas[i] = got
            done[i] = True
    return {"truth": truth, "dets": dets, "refined": refined, "kinds": kinds, "areas": areas,
            "done": done, "quality": out.scores, "conf": out.keypoints[..., 2]}


def kind_confusion(cap: dict[str, Any]) -> dict[str, Any]:
    """What the head says of the input keypoints by their true type (the diagnosis of the
    input against the ground truth): count, mean probability of each kind, and how often
    each kind is the most likely; and P(inversion) of inverted keypoints by joint."""
    d = classify_keypoints(cap["truth"], cap["dets"])
    lab = np.asarray(d.labels)
    probs = cap["kinds"][d.det_index]
    ok = (lab >= 0) & cap["done"][d.det_index][:, None] \
        & (cap["dets"].keypoints[d.det_index, :, 2] > 0)
    out: dict[str, Any] = {}
    for c, t in enumerate(ERROR_TYPES):
        m = ok & (lab == c)
        if m.any():
            out[t] = {"n": int(m.sum()),
                      "mean_p": np.round(probs[m].mean(0), 3).tolist(),
                      "argmax": np.bincount(probs[m].argmax(-1), minlength=5).tolist(),
                      "p_gross>=0.3": int((probs[m][:, 2:].sum(-1) >= 0.3).sum())}
    inv = ok & (lab == ERROR_TYPES.index("inversion"))
    names = cap["truth"].spec.keypoints
    out["inversion_by_joint"] = {
        names[k]: [int(inv[:, k].sum()), round(float(probs[inv[:, k], k, 2].mean()), 3)]
        for k in range(lab.shape[1]) if inv[:, k].any()}
    return out


def apply(cap: dict[str, Any], opts: FixOptions, score: str) -> Detections:
    """The refined detections of one setting (fixes, scores, OKS-NMS per image)."""
    dets, spec = cap["dets"], cap["truth"].spec
    kp = dets.keypoints.copy()
    kp[..., 2] = np.where(cap["done"][:, None], cap["conf"], kp[..., 2])
    scores = cap["quality"] if score == "quality" else dets.scores
    keep = np.ones(len(dets), dtype=bool)
    used = spec.used_mask
    for image_id in np.unique(dets.image_ids):
        rows = np.flatnonzero((dets.image_ids == image_id) & cap["done"])
        if not len(rows):
            continue
        fixed = fix_keypoints(dets.keypoints[rows], cap["refined"][rows], cap["kinds"][rows],
                              cap["areas"][rows], spec, opts)
        kp[rows, :, :2] = fixed.coords
        if len(rows) > 1:
            kept = oks_nms(kp[rows][:, used], scores[rows], cap["areas"][rows],
                           spec.sigma_array[used], 0.9)
            keep[rows[np.setdiff1d(np.arange(len(rows)), kept)]] = False
    out = Detections(image_ids=dets.image_ids, keypoints=kp, scores=scores, boxes=dets.boxes,
                     category_ids=dets.category_ids)
    return out.select(np.flatnonzero(keep))


def grid(name: str) -> list[tuple[FixOptions, str]]:
    """The settings of a sweep."""
    if name == "none":
        return []
    if name == "small":
        base = [FixOptions(gate=g, inversion=m, swap_ks=s, snap=n)
                for g in (0.3, 0.5) for m in ("off", "keypoint", "pair", "group")
                for s in (0.0, 0.5) for n in (0.0, 0.5)]
    else:
        base = [FixOptions(gate=g, inversion=m, swap_ks=s, snap=n, inversion_gate=ig)
                for g, m, s, n, ig in itertools.product(
                    (0.2, 0.3, 0.4, 0.5, 0.7), ("off", "keypoint", "pair", "group"),
                    (0.0, 0.5), (0.0, 0.5), (None, 0.5))]
    return [(o, s) for o in base for s in ("quality", "input")]


def label(opts: FixOptions, score: str) -> str:
    ig = "" if opts.inversion_gate is None else f" ig{opts.inversion_gate}"
    return (f"gate {opts.gate} inv {opts.inversion}{ig} swap {opts.swap_ks} "
            f"snap {opts.snap} {score}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--suite", nargs="+", default=["lsp"], choices=list(SUITES))
    ap.add_argument("--out", default="runs/sweep_fixes")
    ap.add_argument("--grid", default="small", choices=["small", "full", "none"])
    ap.add_argument("--inputs", nargs="*", default=None,
                    help="only these inputs (e.g. synthesized blazepose_gtboxes)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = load_checkpoint(args.checkpoint)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for suite in args.suite:
            for entry in SUITES[suite]:
                gt, ids = held_out_subset(entry, Path(tmp))
                images = DATA / Path(entry["gt"]).parent
                inputs = {"synthesized": synthesize_file(gt, Path(tmp) / "synth.json", seed=0)}
                for name in entry["inputs"]:
                    dets = [d for d in read_json(images / name) if d["image_id"] in ids]
                    inputs[name.removesuffix(".json")] = write_json_atomic(
                        Path(tmp) / name, dets)
                for inp, path in inputs.items():
                    if args.inputs is not None and inp not in args.inputs:
                        continue
                    cap = capture(ck, gt, path, images)
                    conf = kind_confusion(cap)
                    print(f"{entry['name']} {inp} kinds by true type (good, jitter, inversion, "
                          f"swap, miss): {json.dumps(conf)}", flush=True)
                    rows.append({"set": entry["name"], "input": inp, "kinds": conf})
                    for opts, score in grid(args.grid):
                        s = compare_results(cap["truth"], cap["dets"], apply(cap, opts, score))
                        ch = s["error_changes"]
                        rows.append({
                            "set": entry["name"], "input": inp, "setting": label(opts, score),
                            "ap_before": s["ap_before"]["AP"], "ap_after": s["ap_after"]["AP"],
                            "oks_before": s["mean_oks_before"], "oks_after": s["mean_oks_after"],
                            "errors_before": s["errors_before"], "errors_after": s["errors_after"],
                            "fixed": ch["fixed"], "made": ch["made"]})
                        r = rows[-1]
                        print(f"{entry['name']} {inp} | {r['setting']} | AP "
                              f"{100 * r['ap_before']:.1f} -> {100 * r['ap_after']:.1f} | OKS "
                              f"{r['oks_before']:.3f} -> {r['oks_after']:.3f} | fixed "
                              f"{sum(r['fixed'].values())} made {sum(r['made'].values())} | "
                              f"{r['fixed']} {r['made']}", flush=True)
                    write_json_atomic(out / "results.json", rows, indent=2)
    print(json.dumps({"written": str(out / "results.json")}))


if __name__ == "__main__":
    main()
