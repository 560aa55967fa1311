"""Ground-truth loading at train2017 size: wall, CPU, peak and final RSS, old code against new.

Each measurement is a fresh process that imports ``posefix.io`` from one source tree, calls
``load_ground_truth`` on the file (spec inferred from its categories, as ``posefix
evaluate`` and ``posefix train`` do without ``--spec``) and reports wall and CPU seconds of
the call, RSS before, peak RSS (``ru_maxrss``) and RSS after it, the arrays' own bytes and
a digest of every array, so that old and new must agree to the last bit. Trees alternate
within each round::

    python benchmarks/make_coco_scale.py train --out runs/scale/train2017.json
    git archive <old commit> src | tar -x -C /tmp/gt_old
    python benchmarks/bench_gt_load.py --tree old=/tmp/gt_old/src --tree new=src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, resource, sys, time
import numpy as np
from posefix.io import load_ground_truth

def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024

before = rss()
w, c = time.perf_counter(), time.process_time()
gt = load_ground_truth(sys.argv[1])
w, c = time.perf_counter() - w, time.process_time() - c
arrays = [gt.image_ids, gt.ann_ids, gt.keypoints, gt.boxes, gt.areas, gt.iscrowd]
digest = hashlib.sha256()
for a in arrays:
    digest.update(str((a.dtype, a.shape)).encode())
    digest.update(np.ascontiguousarray(a).tobytes())
digest.update(repr(sorted(gt.images.items())).encode())
print(json.dumps({
    "wall_s": w, "cpu_s": c, "rss_before_mib": before,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_after_mib": rss(), "arrays_mib": sum(a.nbytes for a in arrays) / 2 ** 20,
    "persons": len(gt), "images": len(gt.images), "spec": gt.spec.name,
    "digest": digest.hexdigest()[:16],
}))
"""


def measure(src: Path, gt: Path) -> dict:
    """One fresh process loading ``gt`` with the ``posefix`` of ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(gt)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    """Alternate the trees over the rounds; print one line per run and the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, default=REPO / "runs" / "scale" / "train2017.json")
    ap.add_argument("--tree", action="append", default=None,
                    help="NAME=SRC_DIR (repeatable; default: new=src)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    trees = [t.split("=", 1) for t in (a.tree or [f"new={REPO / 'src'}"])]
    runs: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for _ in range(a.rounds):
        for name, src in trees:
            r = measure(Path(src).resolve(), a.gt)
            runs[name].append(r)
            print(name, json.dumps(r), flush=True)
    digests = {r["digest"] for rs in runs.values() for r in rs}
    print("same arrays in every run:", len(digests) == 1)
    for name, rs in runs.items():
        med = {k: sorted(r[k] for r in rs)[len(rs) // 2]
               for k in ("wall_s", "cpu_s", "peak_mib", "rss_after_mib", "rss_before_mib")}
        print(f"{name}: median wall {med['wall_s']:.1f} s, CPU {med['cpu_s']:.1f} s, RSS "
              f"{med['rss_before_mib']:.0f} MiB before, peak {med['peak_mib']:.0f} MiB, "
              f"after {med['rss_after_mib']:.0f} MiB (arrays {rs[0]['arrays_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
