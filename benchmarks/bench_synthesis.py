"""Input-pose synthesis throughput: posefix's vectorized sampler against a per-keypoint loop.

    .venv/bin/python benchmarks/bench_synthesis.py [--persons 10000] [--loop-persons 200]

Both sample the same model (paper section 4; see posefix.synthesis): the loop below is a
straightforward implementation written from the same description, in the style of the
PoseFix reference (`synthesize_pose`: for every keypoint, 500 candidate positions per
error type, rejection, drop the impossible types, choose one). One CPU thread.

Rates are persons per second of wall-clock time and per second of process CPU time
(medians of ``--repeats`` runs for posefix; one run of ``--loop-persons`` for the loop);
the CPU-time rate is the steadier one on a machine shared with other work.

Batches: the shared COCO ground truth (12 persons with keypoints, 4 images) tiled into
separate images up to ``--persons``, each person with its real overlapping persons
("coco"); and the same persons with 0-3 shifted copies of themselves standing close by as
overlapping others ("crowded").

``--end-to-end`` measures ``posefix synthesize`` as a user runs it, JSON in and out: the
shared COCO file tiled ``--copies`` times (1,700: 20,400 persons with keypoints, new image
and annotation ids, segmentations kept) is written to ``--workdir``, then
``posefix.commands.synthesize.synthesize_file`` reads it, synthesizes and writes the results file
(median of ``--repeats`` runs; persons/s counts the persons synthesized)::

    .venv/bin/python benchmarks/bench_synthesis.py --end-to-end --repeats 5
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from posefix.io import GroundTruth, load_ground_truth  # noqa: E402
from posefix.profile import ErrorProfile, load_profile  # noqa: E402
from posefix.similarity import ks_distance  # noqa: E402
from posefix.spec import KeypointSpec  # noqa: E402
from posefix.synthesis import overlap_index, synthesize  # noqa: E402
from posefix.taxonomy import ERROR_TYPES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco" / "test_coco.json"


def _first_valid(rng: np.random.Generator, sources: tuple[np.ndarray, ...], n: int,
                 cx: np.ndarray, cy: np.ndarray, lo: float, hi: float, t: int,
                 ) -> tuple[float, float] | None:
    """``n`` candidates of type ``t`` around centres (cx, cy), radius in [lo, hi); the first
    valid one (the rules of posefix.synthesis), or None."""
    sx, sy, sc, cl = sources
    e50, e85 = -np.log(0.5), -np.log(0.85)
    r = rng.uniform(lo, hi, n)
    a = rng.uniform(0, 2 * np.pi, n)
    x, y = cx + r * np.cos(a), cy + r * np.sin(a)
    e = ((x[:, None] - sx) ** 2 + (y[:, None] - sy) ** 2) * sc
    best = [np.where(cl == c, e, np.inf).min(1) for c in range(3)]
    if t == 4:
        ok = np.minimum(np.minimum(best[0], best[1]), best[2]) >= e50
    else:
        c = (0, 0, 1, 2)[t]
        rest = np.minimum(*[best[k] for k in range(3) if k != c])
        mine = best[c]
        in_band = ((mine < e85) if t == 0 else (mine >= e85) & (mine < e50) if t == 1
                   else mine < e50)
        ok = in_band & (rest >= (mine if t < 2 else np.maximum(mine, e50)))
    k = np.flatnonzero(ok)
    return (float(x[k[0]]), float(y[k[0]])) if len(k) else None


def loop_synthesize(kp: np.ndarray, areas: np.ndarray, spec: KeypointSpec,
                    profile: ErrorProfile, others: np.ndarray, others_areas: np.ndarray,
                    rng: np.random.Generator, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The per-keypoint loop: for each person, each labelled keypoint, each type, ``n``
    candidates; a candidate is valid under the same rules as posefix.synthesis."""
    N, K = kp.shape[:2]
    poses = np.zeros((N, K, 3))
    types = np.full((N, K), -1, dtype=np.int8)
    for i in range(N):
        lab = kp[i, :, 2] > 0
        olab = others[i, :, :, 2] > 0
        probs = profile.probabilities(spec, [lab.sum()], [olab.any(-1).sum()])[0]
        d85, d50, d10 = (ks_distance(k, areas[i], spec.sigma_array) for k in (0.85, 0.5, 0.1))
        for j in range(K):
            if not lab[j]:
                continue
            p = spec.partner_index[j]
            # Sources: (x, y, 1 / (8 sigma^2 area), class) with class 0 own, 1 partner,
            # 2 another person.
            srcs = [(kp[i, j, 0], kp[i, j, 1], areas[i], 0)]
            if p >= 0 and lab[p]:
                srcs.append((kp[i, p, 0], kp[i, p, 1], areas[i], 1))
            for m in range(others.shape[1]):
                for q in (j, p):
                    if q >= 0 and olab[m, q]:
                        srcs.append((others[i, m, q, 0], others[i, m, q, 1],
                                     others_areas[i, m], 2))
            sx = np.array([s[0] for s in srcs])
            sy = np.array([s[1] for s in srcs])
            sc = 1.0 / (8 * spec.sigma_array[j] ** 2 * np.array([s[2] for s in srcs]))
            cl = np.array([s[3] for s in srcs])

            src = (sx, sy, sc, cl)
            cand: list[tuple[float, float] | None] = [None] * 5
            gx, gy = np.full(n, sx[0]), np.full(n, sy[0])
            cand[0] = _first_valid(rng, src, n, gx, gy, 0, d85[j], 0)
            cand[1] = _first_valid(rng, src, n, gx, gy, d85[j], d50[j], 1)
            if (cl == 1).any():
                k = np.flatnonzero(cl == 1)[0]
                cand[2] = _first_valid(rng, src, n, np.full(n, sx[k]), np.full(n, sy[k]), 0,
                                       d50[j], 2)
            if (cl == 2).any():
                pick = rng.choice(np.flatnonzero(cl == 2), n)
                cand[3] = _first_valid(rng, src, n, sx[pick], sy[pick], 0, d50[j], 3)
            w = np.where(cl == 0, 4.0, 1.0)
            pick = rng.choice(len(srcs), n, p=w / w.sum())
            cand[4] = _first_valid(rng, src, n, sx[pick], sy[pick], d50[j], d10[j], 4)
            pr = np.array([probs[j, t] if cand[t] is not None else 0.0 for t in range(5)])
            if pr.sum() <= 0:
                continue
            t = rng.choice(5, p=pr / pr.sum())
            poses[i, j] = (*cand[t], 1.0)
            types[i, j] = t
    return poses, types


def tiled(gt: GroundTruth, persons: int, crowded: bool, seed: int = 0,
          ) -> tuple[np.ndarray, ...]:
    """(keypoints, areas, others, others_areas) of ``persons`` COCO-like persons."""
    rows = np.flatnonzero(gt.num_labelled > 0)
    idx = overlap_index(gt, rows)
    reps = -(-persons // len(rows))
    kp = np.tile(gt.keypoints[rows], (reps, 1, 1))[:persons]
    areas = np.tile(gt.areas[rows], reps)[:persons]
    if not crowded:
        others = gt.keypoints[np.maximum(idx, 0)]
        others[idx < 0] = 0
        oa = gt.areas[np.maximum(idx, 0)]
        return (kp, areas, np.tile(others, (reps, 1, 1, 1))[:persons],
                np.tile(oa, (reps, 1))[:persons])
    rng = np.random.default_rng(seed)
    boxes = np.tile(gt.boxes[rows], (reps, 1))[:persons]
    count = np.arange(persons) % 4
    shift = (rng.random((persons, 3, 1, 2)) - 0.5) * boxes[:, None, None, 2:] * 0.8
    others = kp[:, None].repeat(3, 1).copy()
    others[..., :2] += shift
    others[np.arange(3)[None] >= count[:, None]] = 0
    return kp, areas, others, np.repeat(areas[:, None], 3, 1)


def tiled_file(copies: int, out: Path) -> int:
    """The shared COCO file tiled ``copies`` times into ``out``; its persons with keypoints."""
    data = json.loads(COCO.read_text())
    images, anns = [], []
    for c in range(copies):
        for im in data["images"]:
            images.append({**im, "id": im["id"] + c * 10 ** 7})
        for a in data["annotations"]:
            anns.append({**a, "id": a["id"] + c * 10 ** 8, "image_id": a["image_id"] + c * 10 ** 7})
    out.write_text(json.dumps({**data, "images": images, "annotations": anns}))
    return sum(1 for a in anns if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd"))


def end_to_end(args: argparse.Namespace) -> None:
    """``synthesize_file`` on the tiled file: JSON in and out."""
    try:
        from posefix.commands.synthesize import synthesize_file
    except ImportError:  # a tree from before posefix.commands
        from posefix.synthesis import synthesize_file
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    gt_path = work / f"coco_x{args.copies}.json"
    persons = tiled_file(args.copies, gt_path)
    wall, cpu = [], []
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = synthesize_file(gt_path, work / "synth.json", seed=r)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    n = len(json.loads(out.read_text()))
    print(f"posefix synthesize end to end: {n} persons ({persons} with keypoints in the "
          f"file), {gt_path.stat().st_size / 2 ** 20:.1f} MiB in, "
          f"{out.stat().st_size / 2 ** 20:.1f} MiB out; median {np.median(wall):.2f} s "
          f"wall, {np.median(cpu):.2f} s CPU: {n / np.median(wall):,.0f} persons/s wall, "
          f"{n / np.median(cpu):,.0f} per CPU-second (runs: "
          f"{', '.join(f'{w:.2f}' for w in wall)} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--end-to-end", action="store_true",
                    help="posefix synthesize on a tiled file, JSON in and out")
    ap.add_argument("--copies", type=int, default=1700)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench_synthesis"))
    ap.add_argument("--persons", type=int, default=10000)
    ap.add_argument("--loop-persons", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if args.end_to_end:
        end_to_end(args)
        return
    gt = load_ground_truth(COCO)
    profile = load_profile("default")
    print(f"# synthesis throughput, {platform.processor() or platform.machine()}, 1 thread")
    print("| batch | persons | overlapping others / person | posefix, persons/s (wall / CPU) "
          "| loop, persons/s (wall / CPU) | speed-up (wall) |")
    print("|---|---|---|---|---|---|")
    for crowded in (False, True):
        kp, areas, others, oa = tiled(gt, args.persons, crowded)
        wall, cpu = [], []
        for r in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            _, types = synthesize(kp, areas, gt.spec, profile, np.random.default_rng(r),
                                  others=others, others_areas=oa)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        ours, ours_cpu = len(kp) / np.median(wall), len(kp) / np.median(cpu)
        n = args.loop_persons
        t0, c0 = time.perf_counter(), time.process_time()
        _, ltypes = loop_synthesize(kp[:n], areas[:n], gt.spec, profile, others[:n], oa[:n],
                                    np.random.default_rng(0))
        loop, loop_cpu = n / (time.perf_counter() - t0), n / (time.process_time() - c0)
        name = "crowded" if crowded else "coco"
        per = (others[..., 2] > 0).any(-1).sum(1).mean()
        print(f"| {name} | {len(kp)} | {per:.2f} | {ours:,.0f} / {ours_cpu:,.0f} "
              f"| {loop:,.0f} / {loop_cpu:,.0f} | {ours / loop:,.0f}x |")
        share = [f"{t} {(types == c).sum() / (types >= 0).sum():.3f}"
                 for c, t in enumerate(ERROR_TYPES)]
        lshare = [f"{(ltypes == c).sum() / max((ltypes >= 0).sum(), 1):.3f}"
                  for c in range(5)]
        print(f"<!-- {name}: type shares posefix {', '.join(share)}; loop "
              f"{', '.join(lshare)} -->")


if __name__ == "__main__":
    main()
