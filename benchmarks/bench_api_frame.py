"""The Python API per frame: ``Refiner.refine_image`` on a one-person frame, one thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_api_frame.py                  # every backend
    OMP_NUM_THREADS=1 python benchmarks/bench_api_frame.py --profile auto   # where time goes

The embedded sample's image 196141 (640x427) with the first of its MoveNet persons, refined
``--repeat`` times in a loop as a video loop would (the refiners built once, outside the
timing; two warm-up calls each first); the median and best milliseconds per call of each
backend (``Refiner.from_checkpoint(backend=...)``, ``auto`` being what ``posefix refine``
runs by default; ``torch`` is what ``Refiner.from_checkpoint()`` ran before issue 29). The
backends take turns in ``--rounds`` rounds of ``repeat / rounds`` calls, so that the load
of a shared machine falls on each alike. ``--profile BACKEND`` prints cProfile's top
functions (by cumulative time) of that backend's loop instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time
from pathlib import Path

import numpy as np

import posefix
from posefix.images import load_image

SAMPLE = Path(posefix.__file__).parent / "assets" / "sample"
BACKENDS = ("auto", "onnxruntime-int8", "onnxruntime", "torch")


def one_person_frame() -> tuple[np.ndarray, np.ndarray]:
    """The sample image 196141 and the first of its MoveNet persons (1, 17, 3)."""
    people = [d for d in json.loads((SAMPLE / "movenet.json").read_text())
              if d["image_id"] == 196141]
    kp = np.array(people[0]["keypoints"], dtype=np.float64).reshape(1, 17, 3)
    return load_image(SAMPLE / "000000196141.jpg"), kp


def make_refiner(backend: str) -> posefix.Refiner:
    """The shipped model on ``backend`` (``from_checkpoint(backend=)`` where the API has it;
    before issue 29 it ran PyTorch alone, and the ONNX backends came from ``from_onnx``)."""
    try:
        return posefix.Refiner.from_checkpoint(backend=backend)  # device "auto", as a user
    except TypeError:  # the API before issue 29
        if backend == "torch":
            return posefix.Refiner.from_checkpoint(device="cpu")
        if backend == "auto":
            return posefix.Refiner.from_checkpoint(device="cpu")  # what it ran then
        return posefix.Refiner.from_onnx(int8=backend == "onnxruntime-int8")


def time_calls(refiner: posefix.Refiner, image: np.ndarray, kp: np.ndarray,
               repeat: int) -> list[tuple[float, float]]:
    """Wall-clock and CPU milliseconds of each of ``repeat`` ``refine_image`` calls (after
    two warm-ups)."""
    for _ in range(2):
        refiner.refine_image(image, kp)
    out = []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        refiner.refine_image(image, kp)
        out.append(((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--profile", choices=BACKENDS, default=None)
    a = p.parse_args()
    image, kp = one_person_frame()
    if a.profile:
        refiner = make_refiner(a.profile)
        time_calls(refiner, image, kp, 2)
        prof = cProfile.Profile()
        prof.enable()
        time_calls(refiner, image, kp, a.repeat)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return
    refiners = {name: make_refiner(name) for name in a.backends}
    ms: dict[str, list[tuple[float, float]]] = {name: [] for name in a.backends}
    for _ in range(a.rounds):
        for name, refiner in refiners.items():
            ms[name] += time_calls(refiner, image, kp, max(1, a.repeat // a.rounds))
    print("| backend | runs | median ms/frame | best ms/frame | median CPU ms/frame |")
    print("| --- | --- | --- | --- | --- |")
    for name, refiner in refiners.items():
        what = getattr(refiner, "backend", refiner.description.split(",")[0])
        wall, cpu = zip(*ms[name], strict=True)
        print(f"| {name} ({what}) | {len(wall)} | {statistics.median(wall):.2f} | "
              f"{min(wall):.2f} | {statistics.median(cpu):.2f} |")

if __name__ == "__main__":
    main()
