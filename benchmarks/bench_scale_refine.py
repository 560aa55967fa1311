"""``posefix refine`` on a 500,000-detection results file: memory while it streams, and
detections/s against a small file.

Needs ``runs/scale/testdev.json`` (image list, 20,288 images) and
``runs/scale/testdev_dets500k.json`` from ``benchmarks/make_coco_scale.py``. The network
is ``--config``'s with random weights (speed and memory do not depend on them; default
``tiny_cpu``, ResNet-18 at 64x48: on two CPU cores the whole file would take hours, so
the large run is stopped after ``--budget`` seconds of refining and the report says how
far it got). The command runs as a subprocess under a pseudo-terminal, so that its
progress bar gives the count of refined detections over time; memory (RSS, PSS, USS) of
it and of its loader workers is sampled every second::

    python benchmarks/bench_scale_refine.py --budget 240 --rounds 2

The small file is the detections of the large file's first ``--small-images`` images (the
same images, scores and density). Rounds alternate small and large runs; the rate of each
run is measured while it refines (from its first to its last progress update, after the
file is read), so that reading 500,000 detections does not count against the large file.

``--io`` measures instead, in this process, what the parts of a whole run that a partial
run never reaches cost: reading and validating the 500,000 detections, and writing them
back as a results file (``posefix.io.write_results``, as ``refine_files`` does at its
end; before issue 22 ``Detections.to_json`` and ``write_json_atomic``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import resource
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import numpy as np
from procmem import Sampler, memory, mib

REPO = Path(__file__).resolve().parents[1]
SCALE = REPO / "runs" / "scale"
SHARED = REPO.parent / "shared" / "data"
PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


def make_checkpoint(config: str, path: Path) -> Path:
    """A checkpoint of ``config``'s network with random weights."""
    from posefix.checkpoint import save_checkpoint
    from posefix.config import load_config
    from posefix.model import build_model
    from posefix.spec import load_spec

    if not path.is_file():
        cfg = load_config(config)
        save_checkpoint(path, model=build_model(cfg.model, 17), config=cfg,
                        spec=load_spec("coco17"))
    return path


def small_file(big: Path, images: int, out: Path) -> int:
    """The detections of the first ``images`` image ids of ``big`` (file order)."""
    dets = json.loads(big.read_text())
    keep: dict[int, None] = {}
    for d in dets:
        if len(keep) < images:
            keep.setdefault(d["image_id"])
    small = [d for d in dets if d["image_id"] in keep]
    out.write_text(json.dumps(small))
    return len(small)


def run_refine(ckpt: Path, results: Path, out: Path, budget: float | None,
               workers: int) -> dict:
    """Run ``posefix refine`` under a pty; return timings, progress and memory samples."""
    cmd = [str(REPO / ".venv" / "bin" / "posefix"), "refine", "--checkpoint", str(ckpt),
           "--images", str(SHARED), "--image-list", str(SCALE / "testdev.json"),
           "--results", str(results), "--out", str(out), "--workers", str(workers),
           "--device", "cpu"]
    master, slave = pty.openpty()
    # A new pty is 0 columns wide, and tqdm draws nothing at width 0: give it a size.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=slave,
                            start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS":
                                 os.environ.get("OMP_NUM_THREADS", "1"), "COLUMNS": "120"})
    os.close(slave)
    sampler = Sampler(proc.pid, interval=1.0).start()
    progress: list[tuple[float, int]] = []
    total = None
    buf = b""
    stopped = False
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            buf = (buf + chunk)[-4096:]
            for m in PROGRESS.finditer(chunk):
                progress.append((time.perf_counter() - t0, int(m.group(1))))
                total = int(m.group(2))
        elif proc.poll() is not None:
            break
        if budget is not None and progress and not stopped and \
                time.perf_counter() - t0 - progress[0][0] > budget:
            os.killpg(proc.pid, signal.SIGTERM)
            stopped = True
    stdout = proc.communicate()[0].decode(errors="replace")
    sampler.stop()
    os.close(master)
    return {"seconds": time.perf_counter() - t0, "progress": progress, "total": total,
            "stopped": stopped, "samples": sampler.samples, "stdout": stdout,
            "returncode": proc.returncode}


def rate(run: dict) -> tuple[float, int, float]:
    """Detections/s between the first and the last progress update; how many ran; when
    refining started."""
    p = [x for x in run["progress"] if x[1] > 0]
    if len(p) < 2:
        return float("nan"), (p[-1][1] if p else 0), float("nan")
    (t0, n0), (t1, n1) = p[0], p[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9), n1, t0


def memory_report(run: dict, refine_start: float) -> list[str]:
    """Main RSS over the run, before and while refining; workers' USS/PSS."""
    s = run["samples"]
    if not s:
        return ["no memory samples"]
    load = [x for x in s if x.t < refine_start]
    during = [x for x in s if x.t >= refine_start]
    out = [f"main RSS peak while reading the input: "
           f"{mib(max((x.main['rss'] for x in load), default=0)):.0f} MiB"]
    if during:
        rss = np.array([x.main["rss"] for x in during]) / 2 ** 20
        q = len(rss) // 4 or 1
        out.append(f"main RSS while refining ({len(rss)} samples over "
                   f"{during[-1].t - during[0].t:.0f} s): first quarter median "
                   f"{np.median(rss[:q]):.0f} MiB, last quarter median "
                   f"{np.median(rss[-q:]):.0f} MiB, max {rss.max():.0f} MiB")
        first, last = during[0], during[-1]
        for name, x in (("first", first), ("last", last)):
            w = "; ".join(f"RSS {mib(m['rss']):.0f} PSS {mib(m['pss']):.0f} USS "
                          f"{mib(m['uss']):.0f}" for m in x.workers.values())
            out.append(f"workers at the {name} sample while refining ({x.t:.0f} s): {w}")
    return out


def cmd_io(a: argparse.Namespace) -> None:
    from posefix.images import load_image_list
    from posefix.io import load_results
    try:
        from posefix.io import write_results
    except ImportError:  # before issue 22
        from posefix.io import write_json_atomic

        def write_results(path: Path, dets: object) -> None:
            write_json_atomic(path, dets.to_json())

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def now() -> float:
        return mib(memory(os.getpid())["rss"])

    print(f"start: RSS {now():.0f} MiB")
    t, c = time.perf_counter(), time.process_time()
    infos = load_image_list(SCALE / "testdev.json")
    dets = load_results(a.results, "coco17", image_ids=infos)
    print(f"load_results: {len(dets)} detections in {time.perf_counter() - t:.1f} s "
          f"({time.process_time() - c:.1f} s CPU), peak RSS {peak():.0f} MiB, RSS after "
          f"{now():.0f} MiB")
    t, c = time.perf_counter(), time.process_time()
    before = peak()
    out = SCALE / "io_check_out.json"
    write_results(out, dets)
    print(f"write_results: {time.perf_counter() - t:.1f} s ({time.process_time() - c:.1f} s "
          f"CPU), peak RSS {peak():.0f} MiB (was {before:.0f}), "
          f"{out.stat().st_size / 2 ** 20:.0f} MiB written")
    out.unlink()


def main() -> None:
    """Alternate small and large runs, then report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=SCALE / "testdev_dets500k.json")
    ap.add_argument("--config", default="tiny_cpu")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--budget", type=float, default=240, help="seconds of refining per large run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small-images", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--io", action="store_true", help="measure reading and writing only")
    a = ap.parse_args()
    if a.io:
        cmd_io(a)
        return
    ckpt = a.checkpoint or make_checkpoint(a.config, SCALE / f"random_{a.config}.pt")
    small = SCALE / f"dets_first{a.small_images}images.json"
    n_small = small_file(a.results, a.small_images, small)
    print(f"checkpoint {ckpt}; small file: {n_small} detections on {a.small_images} images")
    rates: dict[str, list[float]] = {"small": [], "large": []}
    for r in range(a.rounds):
        for name in ("small", "large") if r % 2 == 0 else ("large", "small"):
            res = a.results if name == "large" else small
            run = run_refine(ckpt, res, SCALE / f"refined_{name}.json",
                             a.budget if name == "large" else None, a.workers)
            det_s, done, started = rate(run)
            rates[name].append(det_s)
            print(f"-- round {r} {name}: {det_s:.1f} detections/s while refining; "
                  f"{done} of {run['total']} refined; refining started {started:.0f} s "
                  f"after launch; run {run['seconds']:.0f} s"
                  + (" (stopped)" if run["stopped"] else f", exit {run['returncode']}"))
            if name == "small" and run["returncode"] == 0:
                line = [x for x in run["stdout"].splitlines() if "detections/s" in x]
                print("   posefix refine says:", line[-1].strip() if line else "?")
            if name == "large":
                for line in memory_report(run, started):
                    print("   " + line)
    for name, v in rates.items():
        print(f"{name}: median {np.median(v):.1f} detections/s over {len(v)} runs ({v})")


if __name__ == "__main__":
    main()
