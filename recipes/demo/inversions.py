"""Real estimators' inversions against synthesized ones (issue 21): why the error head misses them.

Prints, for the four real inputs on the LSP test split (evaluation only: nothing here is fitted
or trained) and for inputs synthesized from the LSP *training* persons with a profile:

* inverted keypoints per left/right pair, *exchanged* (the partner inverted too) or
  *one-sided* (the partner not inverted: both keypoints on one limb);
* how a person's inversions go together (one keypoint, a limb put onto the other limb, a
  body half or the whole person exchanged, ...);
* the KS of the inverted keypoints with their partner's ground truth (on the partner's
  joint from 0.85);
* the correlated errors as ``posefix.profile.correlated_events`` counts them;
* BlazePose's and MoveNet's AP with only their exchanged, or only their one-sided,
  inversions moved onto the ground truth (as ``posefix analyze`` does with all of them);
* for the persons whose ground truth was judged mirrored by eye (``MIRRORED_GT``), every
  input's AP with their left/right labels exchanged where BlazePose exchanged them.

With ``--probe`` it also runs the shipped model on BlazePose's LSP test poses and on ground
truth poses with BlazePose's inversions re-made exactly (on the partner's joint) or displaced
from it, and on inputs synthesized from the LSP test persons with the profile (seed 0), and
prints the mean P(gross error) of its input-error head for each (~6 min on 1 core).

    .venv/bin/python recipes/demo/inversions.py [--profile recipes/demo/profile.yaml] [--probe]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from common import DATA

from posefix.diagnosis import classify_keypoints
from posefix.evaluate import evaluate
from posefix.io import GroundTruth, load_ground_truth, load_results
from posefix.profile import correlated_events, load_profile
from posefix.similarity import keypoint_similarity, ks_distance
from posefix.synthesis import synthesize
from posefix.taxonomy import ABSENT, GOOD, INVERSION

INPUTS = {"BlazePose": "blazepose_gtboxes.json", "MoveNet MultiPose": "movenet_multipose.json",
          "PoseNet single": "posenet_gtboxes.json", "PoseNet multi": "posenet_multi.json"}
JOINTS = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
# LSP test persons whose left/right labels are mirrored (observer-centric), judged by looking at
# the images: facing the camera with the left side labelled on the image's left, or seen from
# behind with it on the right (the first four clear, the last two likely).
MIRRORED_GT = ("im1043.jpg", "im1306.jpg", "im1350.jpg", "im1611.jpg", "im1542.jpg",
               "im1783.jpg")


def pair_states(labels: np.ndarray, spec) -> tuple[np.ndarray, ...]:
    """(P, 6) per body pair: both labelled, exchanged, left only / right only inverted."""
    left = np.array([spec.index(f"left_{j}") for j in JOINTS])
    right = np.array([spec.index(f"right_{j}") for j in JOINTS])
    lab = (labels[:, left] != ABSENT) & (labels[:, right] != ABSENT)
    il, ir = labels[:, left] == INVERSION, labels[:, right] == INVERSION
    return lab, lab & il & ir, lab & il & ~ir, lab & ir & ~il


def patterns(labels: np.ndarray, spec) -> np.ndarray:
    """(P,) how each person's inversions go together ('' for a person with none)."""
    lab, x, one_l, one_r = pair_states(labels, spec)
    one = one_l | one_r
    nx, n1, npairs = x.sum(1), one.sum(1), lab.sum(1)
    j = {n: i for i, n in enumerate(JOINTS)}
    upper, lower = x[:, :3].all(1), x[:, 3:].all(1)
    arms = x[:, [j["elbow"], j["wrist"]]].all(1) & (nx == 2)
    legs = x[:, [j["knee"], j["ankle"]]].all(1) & (nx == 2)
    same_side = (one_l.sum(1) == n1) | (one_r.sum(1) == n1)
    limb = (one[:, [j["elbow"], j["wrist"]]].all(1) | one[:, [j["knee"], j["ankle"]]].all(1))
    return np.select(
        [(nx + n1) == 0, (nx == npairs) & (n1 == 0), nx >= 4,
         upper & (n1 == 0), lower & (n1 == 0), arms & (n1 == 0), legs & (n1 == 0),
         (nx == 1) & (n1 == 0), (nx == 0) & (n1 == 1), (nx == 0) & same_side & limb,
         nx == 0],
        ["", "whole person exchanged", "4-5 pairs exchanged", "upper body exchanged",
         "lower body exchanged", "arms exchanged (elbows + wrists)",
         "legs exchanged (knees + ankles)", "one pair exchanged",
         "one keypoint onto its partner", "a limb onto the other limb", "several one-sided"],
        "exchanged and one-sided")


def describe(name: str, labels: np.ndarray, poses: np.ndarray, truth: np.ndarray,
             areas: np.ndarray, spec, profile, scale: float = 1.0) -> None:
    """Print the inversion statistics of diagnosed or synthesized keypoints."""
    inv = labels == INVERSION
    flip = np.where(spec.partner_index >= 0, spec.partner_index, np.arange(spec.num_keypoints))
    lab, x, one_l, one_r = pair_states(labels, spec)
    print(f"\n## {name}: {len(labels) * scale:.0f} persons, {inv.sum() * scale:.0f} inverted "
          f"keypoints in {inv.any(1).sum() * scale:.0f} persons")
    per = {jn: f"{2 * x[:, i].sum() * scale:.0f}+{(one_l | one_r)[:, i].sum() * scale:.0f}"
           for i, jn in enumerate(JOINTS)}
    print(f"- per pair, exchanged + one-sided keypoints: {per}")
    pats = patterns(labels, spec)
    print("- patterns (persons / inverted keypoints):")
    for p in sorted(set(pats) - {""}, key=lambda p: -inv[pats == p].sum()):
        print(f"  - {p}: {(pats == p).sum() * scale:.0f} / {inv[pats == p].sum() * scale:.0f}")
    ks = keypoint_similarity(poses, truth[:, flip], areas, spec.sigma_array)[inv]
    q = np.quantile(ks, [0.1, 0.25, 0.5, 0.75, 0.9])
    print(f"- KS with the partner's ground truth: quantiles .1/.25/.5/.75/.9 "
          f"{' '.join(f'{v:.2f}' for v in q)}; on the partner's joint (>= 0.85): "
          f"{(ks >= 0.85).mean():.2f}")
    events, exposure, _ = correlated_events(labels, spec, profile)
    print("- correlated events / could show one: " + ", ".join(
        f"{k} {events[k]}/{exposure[k]} = {events[k] / max(exposure[k], 1):.3f}" for k in events))


def fixed_ap(gt: GroundTruth, inputs: dict) -> None:
    """AP with only the exchanged, or only the one-sided, inversions put on the ground truth."""
    spec = gt.spec
    flip = np.where(spec.partner_index >= 0, spec.partner_index, np.arange(spec.num_keypoints))
    print("\n## AP with inversions moved onto the ground truth")
    for name in ("BlazePose", "MoveNet MultiPose"):
        dets = inputs[name]
        dg = classify_keypoints(gt, dets)
        inv = dg.labels == INVERSION
        cells = [f"none {100 * evaluate(gt, dets)['AP']:.1f}"]
        for label, m in (("all", inv), ("exchanged", inv & inv[:, flip]),
                         ("one-sided", inv & ~inv[:, flip])):
            kp = dets.keypoints.copy()
            p, k = np.nonzero(m)
            kp[dg.det_index[p], k, :2] = gt.keypoints[dg.gt_index[p], k, :2]
            ap = evaluate(gt, dataclasses.replace(dets, keypoints=kp))["AP"]
            cells.append(f"{label} ({m.sum()}) {100 * ap:.1f}")
        print(f"- {name}: " + ", ".join(cells))


def relabelled(gt: GroundTruth, rows: list[int], exchanged: np.ndarray) -> GroundTruth:
    """``gt`` with the left/right labels of ``exchanged`` (P, K) keypoints of ``rows`` swapped."""
    flip = np.where(gt.spec.partner_index >= 0, gt.spec.partner_index,
                    np.arange(gt.spec.num_keypoints))
    kp = gt.keypoints.copy()
    for g, ex in zip(rows, exchanged, strict=True):
        kp[g, ex] = gt.keypoints[g][flip][ex]
    return dataclasses.replace(gt, keypoints=kp)


def mirrored_gt_ap(gt: GroundTruth, inputs: dict) -> None:
    """Every input's AP and inversions with the MIRRORED_GT persons' labels corrected."""
    spec = gt.spec
    flip = np.where(spec.partner_index >= 0, spec.partner_index, np.arange(spec.num_keypoints))
    blaze = inputs["BlazePose"]
    dg = classify_keypoints(gt, blaze)
    by_file = {gt.images[int(i)].file_name.split("/")[-1]: r for r, i in enumerate(gt.image_ids)}
    print("\n## LSP test ground truth judged mirrored: AP / inversions, as labelled -> corrected")
    for label, files in (("4 clear", MIRRORED_GT[:4]), ("6 clear or likely", MIRRORED_GT)):
        rows = [by_file[f] for f in files]
        inv = np.stack([dg.labels[np.flatnonzero(dg.gt_index == g)[0]] == INVERSION
                        for g in rows])
        fixed = relabelled(gt, rows, inv & inv[:, flip])
        cells = []
        for name, dets in inputs.items():
            a = (evaluate(gt, dets)["AP"], (classify_keypoints(gt, dets).labels == INVERSION).sum())
            b = (evaluate(fixed, dets)["AP"],
                 (classify_keypoints(fixed, dets).labels == INVERSION).sum())
            cells.append(f"{name} {100 * a[0]:.1f} / {a[1]} -> {100 * b[0]:.1f} / {b[1]}")
        print(f"- {label} ({sum(int(e.sum()) for e in inv & inv[:, flip])} of BlazePose's "
              f"exchanged keypoints): " + "; ".join(cells))


def probe(gt: GroundTruth, blaze, profile: str) -> None:
    """The shipped model's mean P(gross error) on real and re-made inversions."""
    import torch
    from PIL import Image

    from posefix.refiner import Refiner

    torch.set_num_threads(1)
    spec = gt.spec
    flip = np.where(spec.partner_index >= 0, spec.partner_index, np.arange(spec.num_keypoints))
    ref = Refiner.from_checkpoint(backend="torch", device="cpu")
    rng = np.random.default_rng(0)
    dg = classify_keypoints(gt, blaze)
    inv = dg.labels == INVERSION
    labelled = gt.keypoints[..., 2] > 0

    def p_error(g: int, pose: np.ndarray) -> np.ndarray:
        info = gt.images[int(gt.image_ids[g])]
        image = np.asarray(Image.open(gt.image_root / info.file_name).convert("RGB"))
        return ref.refine_image(image, pose[None], np.ones(1), nms=0.0).error[0]

    def remade(g: int, mask: np.ndarray, centre: np.ndarray, ks: float | None) -> np.ndarray:
        pose = gt.keypoints[g].copy()
        pose[:, 2] = pose[:, 2] > 0
        pose[mask, :2] = centre[mask, :2]
        if ks is not None:
            d = ks_distance(ks, gt.areas[g], spec.sigma_array)[mask]
            a = rng.random(mask.sum()) * 2 * np.pi
            pose[mask, :2] += np.stack([d * np.cos(a), d * np.sin(a)], 1)
        return pose

    got: dict[str, list[float]] = {}
    for i in range(len(dg)):
        g, m = int(dg.gt_index[i]), inv[i]
        real = p_error(g, blaze.keypoints[dg.det_index[i]])
        got.setdefault("BlazePose, good", []).extend(real[dg.labels[i] == GOOD])
        got.setdefault("BlazePose, inversion exchanged", []).extend(real[m & m[flip]])
        got.setdefault("BlazePose, inversion one-sided", []).extend(real[m & ~m[flip]])
        if not m.any():
            continue
        truth = gt.keypoints[g]
        for label, centre, ks in (("re-made on the partner's joint", truth[flip], None),
                                  ("re-made at KS 0.7 from the partner", truth[flip], 0.7),
                                  ("own joint moved to KS 0.7 (a jitter)", truth, 0.7),
                                  ("own joint moved to KS 0.3 (a miss)", truth, 0.3)):
            got.setdefault(label, []).extend(p_error(g, remade(g, m, centre, ks))[m])
        # the same pattern on another person with those keypoints and partners labelled
        fits = np.flatnonzero(labelled[:, m].all(1) & labelled[:, flip[m]].all(1))
        o = int(rng.choice(fits[fits != g]))
        got.setdefault("re-made on the partner's joint, on a random other person", []).extend(
            p_error(o, remade(o, m, gt.keypoints[o][flip], None))[m])
    poses, types = synthesize(gt.keypoints, gt.areas, spec, profile, rng=0)
    ks = keypoint_similarity(poses, gt.keypoints[:, flip], gt.areas, spec.sigma_array)
    for g in range(len(gt)):
        p = p_error(g, poses[g])
        m = types[g] == INVERSION
        for lo, hi in ((0.5, 0.7), (0.7, 0.85), (0.85, 1.01)):
            band = m & (ks[g] >= lo) & (ks[g] < hi)
            got.setdefault(f"synthesized inversion, KS [{lo}, {min(hi, 1)}) with the partner",
                           []).extend(p[band])
        got.setdefault("synthesized good", []).extend(p[types[g] == GOOD])
    print("\n## shipped model, mean P(gross error) (share >= the gate 0.3)")
    for label, v in got.items():
        v = np.asarray(v)
        print(f"- {label}: {len(v)} keypoints, {np.nanmean(v):.3f} ({(v >= 0.3).mean():.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=str(Path(__file__).resolve().parent / "profile.yaml"))
    ap.add_argument("--repeat", type=int, default=10, help="synthesized copies of each person")
    ap.add_argument("--probe", action="store_true", help="also run the shipped model")
    args = ap.parse_args()
    gt = load_ground_truth(DATA / "lsp" / "coco17.json", split="test")
    spec = gt.spec
    limbs = load_profile("default")
    inputs = {n: load_results(DATA / "lsp" / f, spec, image_ids=gt.images) for n, f in INPUTS.items()}
    for name, dets in inputs.items():
        dg = classify_keypoints(gt, dets)
        describe(f"{name} (LSP test)", dg.labels, dets.keypoints[dg.det_index],
                 gt.keypoints[dg.gt_index], gt.areas[dg.gt_index], spec, limbs)
    train = load_ground_truth(DATA / "lsp" / "coco17.json", split="train")
    kp = np.tile(train.keypoints, (args.repeat, 1, 1))
    area = np.tile(train.areas, args.repeat)
    poses, types = synthesize(kp, area, spec, args.profile, rng=0)
    describe(f"synthesized, {Path(args.profile).name} (LSP train x{args.repeat}, per copy)",
             types, poses, kp, area, spec, limbs, scale=1 / args.repeat)
    fixed_ap(gt, inputs)
    mirrored_gt_ap(gt, inputs)
    if args.probe:
        probe(gt, inputs["BlazePose"], args.profile)


if __name__ == "__main__":
    main()
