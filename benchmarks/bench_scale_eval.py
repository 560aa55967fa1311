"""``posefix evaluate`` and ``posefix analyze`` at COCO val2017's size against pycocotools.

Needs ``runs/scale/val2017.json`` (5,000 images, 11,004 annotations of which 6,352 persons
with keypoints) and ``runs/scale/val2017_dets100k.json`` (100,000 detections) from
``benchmarks/make_coco_scale.py``. Each tool runs as its own process, from reading the
files to printing the figures; wall-clock time and peak resident memory (the child's
``ru_maxrss``) are recorded, with the CPU seconds (user + system), which the load of a
shared machine inflates less than wall-clock time. Rounds rotate the order of the three tools so that the load
of a shared machine hits them alike; medians are reported, and the figures compared::

    python benchmarks/bench_scale_eval.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCALE = REPO / "runs" / "scale"

PYCOCOTOOLS = """
import contextlib, io, json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    dt = gt.loadRes(sys.argv[2])
    ev = COCOeval(gt, dt, "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
print(json.dumps([float(x) for x in ev.stats]))
"""

NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def run(cmd: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB, the child's ``ru_maxrss``
    from wait4) and stdout."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS":
                                     os.environ.get("OMP_NUM_THREADS", "1")})
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[:3])} failed: {err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.decode()


def main() -> None:
    """Rotate the three tools over rounds; report medians and compare the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, default=SCALE / "val2017.json")
    ap.add_argument("--results", type=Path, default=SCALE / "val2017_dets100k.json")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    posefix = str(REPO / ".venv" / "bin" / "posefix")
    tools = {
        "posefix evaluate": [posefix, "evaluate", "--gt", str(a.gt), "--results",
                             str(a.results), "--json"],
        "posefix analyze": [posefix, "analyze", "--gt", str(a.gt), "--results",
                            str(a.results), "--json"],
        "pycocotools": [sys.executable, "-c", PYCOCOTOOLS, str(a.gt), str(a.results)],
    }
    order = list(tools)
    times: dict[str, list[float]] = {k: [] for k in tools}
    cpu: dict[str, list[float]] = {k: [] for k in tools}
    peaks: dict[str, list[float]] = {k: [] for k in tools}
    outputs: dict[str, str] = {}
    for r in range(a.rounds):
        for name in order[r % 3:] + order[:r % 3]:
            wall, secs, peak, out = run(tools[name])
            times[name].append(wall)
            cpu[name].append(secs)
            peaks[name].append(peak)
            outputs[name] = out
            print(f"round {r} {name}: {wall:.1f} s ({secs:.1f} s CPU), peak RSS {peak:.0f} MiB",
                  flush=True)
    for name in tools:
        print(f"{name:<17} median {np.median(times[name]):6.1f} s wall (runs "
              f"{', '.join(f'{x:.1f}' for x in times[name])}), {np.median(cpu[name]):6.1f} s "
              f"CPU, peak RSS {np.median(peaks[name]):.0f} MiB")
    coco = json.loads(outputs["pycocotools"])
    ours = json.loads(outputs["posefix evaluate"])
    report = json.loads(outputs["posefix analyze"])
    same = all(ours[k] == v for k, v in zip(NAMES, coco, strict=True))
    print("pycocotools       " + " ".join(f"{k} {v:.6f}" for k, v in zip(NAMES, coco,
                                                                         strict=True)))
    print("posefix evaluate  " + " ".join(f"{k} {ours[k]:.6f}" for k in NAMES))
    print(f"identical to the last digit: {same}; max |difference| "
          f"{max(abs(ours[k] - v) for k, v in zip(NAMES, coco, strict=True)):.2e}")
    base = report["ap"]
    print(f"posefix analyze: AP {base['AP']:.6f} (pycocotools {coco[0]:.6f}), "
          f"{report['matched']} matched detections, {report['missed_ground_truth']} missed "
          f"persons, {report['background_false_positives']} background false positives")


if __name__ == "__main__":
    main()
