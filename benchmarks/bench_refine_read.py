"""``posefix refine``'s reading of its inputs: the preflight's parse reused, or read again.

    .venv/bin/python benchmarks/bench_refine_read.py [--detections 200000] [--repeats 3]

The shared COCO sample's BlazePose detections (``tests/data/coco/blazepose_detboxes.json``)
tiled to ``--detections`` rows in a temporary file, with the sample's ground truth. Both
runs do what ``posefix refine`` does before torch (``check_refine_inputs``: the ground truth
and every results row parsed and checked) and then read the inputs in the model's layout
(COCO-17): "again" as before (``load_ground_truth`` and ``read_poses`` read the files a
second time), "reused" as now (``read_poses(..., coco=checked.results)``: the preflight's
rows, only the image-id check again). Seconds of wall-clock time, the least of
``--repeats``; one thread.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from posefix.commands.preflight import check_refine_inputs  # noqa: E402
from posefix.formats import read_poses  # noqa: E402
from posefix.io import load_ground_truth  # noqa: E402
from posefix.options import RefinePaths  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "coco"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detections", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    gt = DATA / "test_coco.json"
    rows = json.loads((DATA / "blazepose_detboxes.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        results, out = Path(tmp) / "results.json", Path(tmp) / "out.json"
        results.write_text(json.dumps([rows[i % len(rows)] for i in range(a.detections)]))

        def again() -> None:
            check_refine_inputs(RefinePaths(results, out, DATA, gt))
            truth = load_ground_truth(gt, spec="coco17", image_root=DATA)
            read_poses(results, "coco17", "coco", dict(truth.images))

        def reused() -> None:
            checked = check_refine_inputs(RefinePaths(results, out, DATA, gt))
            read_poses(results, "coco17", "coco", dict(checked.truth.images),
                       coco=checked.results)

        mib = results.stat().st_size / 2**20
        print(f"{a.detections} detections ({mib:.1f} MiB), least of {a.repeats} runs:")
        for name, run in (("read again", again), ("reused", reused)):
            print(f"  {name:<10} {_least(run, a.repeats):.2f} s")


def _least(run: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    main()
