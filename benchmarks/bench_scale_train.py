"""Training data at COCO scale: start-up, memory per loader worker, loader rate, sampling.

Needs the files of ``benchmarks/make_coco_scale.py`` (default paths under ``runs/scale/``).

``startup``: runs ``posefix train r50_256x192`` (the recipe's data pipeline: 256x192 crops,
its augmentation and synthesis; ``--backbone`` only makes the network cheaper to build) on a
150k-person file as a subprocess; reports the time until the first optimizer step is
logged and the memory (RSS, PSS, USS from /proc) of the main process and of every loader
worker, then stops it::

    python benchmarks/bench_scale_train.py startup --workers 2 --steps 5

``epochs``: the real training DataLoader (``build_dataset`` + ``build_train_loader``, as
``posefix train`` builds them) without a network, over whole epochs: samples/s, memory of
the main process and of each worker at the end of every epoch, and whether every sample
came exactly once per epoch::

    python benchmarks/bench_scale_train.py epochs --ann runs/scale/train2017_small.json \\
        --images runs/scale/images_x0.25 --epochs 3

``rate``: the cost of one training sample in this process (what one loader worker does),
the 150k-person table against the 12-person shared COCO set on the same image files, in
alternating rounds (median)::

    python benchmarks/bench_scale_train.py rate --rounds 7

``sampler``: the sampler and the real DataLoader on the file's length, as 2 and 4 processes
(no spawning), in the steps and micro-batches ``posefix.train`` takes: every index once per
epoch, the last uneven step, and a resume in the middle of an epoch::

    python benchmarks/bench_scale_train.py sampler
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from procmem import Sampler, memory, mib

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRAIN = REPO / "runs" / "scale" / "train2017.json"
VAL = REPO / "runs" / "scale" / "val2017.json"


def _overrides(ann: Path, images: Path, val: Path | None, workers: int, out: Path,
               backbone: str | None) -> list[str]:
    over = [f"data.train=[{{ann: {ann}, images: {images}}}]", f"data.workers={workers}",
            f"run.out_dir={out}", "run.progress=false", "run.log_every=1", "run.device=cpu",
            "run.checkpoint_every=0"]
    if val is not None:  # loaded at start-up as a real run does; validated only at epoch 10
        over += [f"data.val=[{{ann: {val}, images: {images}}}]"]
    else:
        over += ["data.val=[]", "run.val_every=0"]
    if backbone:
        over.append(f"model.backbone={backbone}")
    return over


def _mem_line(name: str, m: dict[str, int]) -> str:
    return (f"{name:<10} RSS {mib(m['rss']):7.0f}  PSS {mib(m['pss']):7.0f}  "
            f"USS {mib(m['uss']):7.0f} MiB")


def _logged_steps(log: Path) -> int:
    if not log.is_file():
        return 0
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return int(rows[-1]["step"]) if rows else 0


def cmd_startup(a: argparse.Namespace) -> None:
    out = Path(a.out)
    log = out / "log.csv"
    log.unlink(missing_ok=True)
    cmd = [str(REPO / ".venv" / "bin" / "posefix"), "train", "r50_256x192",
           *_overrides(Path(a.ann), Path(a.images), Path(a.val) if a.val else None, a.workers,
                       out, a.backbone), "--resume", "no"]
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    sampler = Sampler(proc.pid, interval=0.5).start()
    first_worker = first_step = None
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            if first_worker is None and sampler.samples and sampler.samples[-1].workers:
                first_worker = time.perf_counter() - t0
            steps = _logged_steps(log)
            if first_step is None and steps >= 1:
                first_step = time.perf_counter() - t0
                at_first = sampler.poll()
            if steps >= a.steps:
                break
            if time.perf_counter() - t0 > a.timeout:
                print("timeout")
                break
        end = sampler.poll()
    finally:
        sampler.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0].decode(errors="replace")
    if first_step is None:
        print(rest[-3000:])
        raise SystemExit("no step was logged")
    print(f"loader workers started after {first_worker:.1f} s; first optimizer step "
          f"logged after {first_step:.1f} s; step {_logged_steps(log)} after "
          f"{end.t:.1f} s")
    print(f"peak RSS of the main process: {mib(sampler.peak('rss')):.0f} MiB (during "
          f"start-up); peak sum of USS over all processes {mib(sampler.peak_total()):.0f} MiB")
    for label, s in (("at the first step", at_first), (f"at step {a.steps}", end)):
        print(f"-- {label} ({s.t:.1f} s)")
        print(_mem_line("main", s.main))
        for i, m in enumerate(s.workers.values()):
            print(_mem_line(f"worker {i}", m))


def cmd_phases(a: argparse.Namespace) -> None:
    import resource

    from posefix.config import load_config
    from posefix.data import build_dataset, load_persons
    from posefix.io import load_ground_truth
    from posefix.jsonfiles import read_json

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cfg = load_config("r50_256x192", _overrides(Path(a.ann), Path(a.images),
                                                Path(a.val) if a.val else None, 0,
                                                Path(a.out), None))
    t = time.perf_counter()
    data = read_json(a.ann)
    print(f"json.loads of {Path(a.ann).name}: {time.perf_counter() - t:.1f} s, "
          f"peak RSS {peak():.0f} MiB")
    del data
    gc.collect()
    t = time.perf_counter()
    gt = load_ground_truth(a.ann, image_root=a.images)
    print(f"load_ground_truth: {time.perf_counter() - t:.1f} s ({len(gt)} annotations), "
          f"peak RSS {peak():.0f} MiB, RSS now {mib(memory(os.getpid())['rss']):.0f} MiB")
    del gt
    gc.collect()
    t = time.perf_counter()
    table = load_persons(cfg.data.train, cfg.data.spec, cfg.data.overlap_iou)
    print(f"load_persons (train): {time.perf_counter() - t:.1f} s ({len(table)} persons), "
          f"RSS now {mib(memory(os.getpid())['rss']):.0f} MiB")
    t = time.perf_counter()
    build_dataset(cfg, "train", table=table)
    print(f"PoseFixDataset: {time.perf_counter() - t:.2f} s")
    if a.val:
        t = time.perf_counter()
        val = build_dataset(cfg, "val")
        print(f"validation set: {time.perf_counter() - t:.1f} s ({len(val)} persons)")
    print(f"peak RSS {peak():.0f} MiB")


def _table_info(ds) -> str:
    t = ds.table
    arrays = sum(v.nbytes for v in vars(t).values() if isinstance(v, np.ndarray))
    return (f"{len(t)} persons in {len(t.image_paths)} images, table arrays "
            f"{mib(arrays):.0f} MiB")


def cmd_epochs(a: argparse.Namespace) -> None:
    import torch

    from posefix.config import load_config
    from posefix.data import build_dataset
    from posefix.train import DistInfo, build_train_loader

    torch.set_num_threads(1)
    over = _overrides(Path(a.ann), Path(a.images), None, a.workers, Path(a.out), None)
    if a.input_size:
        over.append(f"model.input_size=[{a.input_size}]")
    cfg = load_config("r50_256x192", over)
    t = time.perf_counter()
    ds = build_dataset(cfg, "train")
    print(f"dataset built in {time.perf_counter() - t:.1f} s: {_table_info(ds)}")
    gc.collect()
    print(_mem_line("main", memory(os.getpid())), "(before the workers start)")
    loader, sampler = build_train_loader(cfg, ds, DistInfo(0, 1, 0, torch.device("cpu")))
    me = Sampler(os.getpid(), interval=a.interval).start()
    n = len(ds)
    for epoch in range(a.epochs):
        sampler.set_epoch(epoch)
        sampler.set_start(0)
        seen = np.zeros(n, dtype=np.int64)
        t = time.perf_counter()
        count = 0
        for i, batch in enumerate(loader):
            rows = batch["meta"]["person"].numpy()
            np.add.at(seen, rows, 1)
            count += len(rows)
            if epoch == 0 and i == 0:
                s = me.poll()
                print(f"-- first batch after {time.perf_counter() - t:.1f} s")
                print(_mem_line("main", s.main))
                for j, m in enumerate(s.workers.values()):
                    print(_mem_line(f"worker {j}", m))
        dt = time.perf_counter() - t
        s = me.poll()
        once = bool((seen == 1).all())
        print(f"-- epoch {epoch}: {count} samples in {dt:.0f} s ({count / dt:.0f} samples/s "
              f"with {a.workers} workers); every sample exactly once: {once}")
        print(_mem_line("main", s.main))
        for j, m in enumerate(s.workers.values()):
            print(_mem_line(f"worker {j}", m))
    me.stop()
    series = [(round(s.t, 1), round(mib(s.main["uss"])),
               [round(mib(w["uss"])) for w in s.workers.values()]) for s in me.samples]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "epochs_memory.json").write_text(json.dumps(series))
    print(f"USS time series (s, main MiB, [workers MiB]) in {Path(a.out) / 'epochs_memory.json'}")


def cmd_rate(a: argparse.Namespace) -> None:
    import cv2
    import torch

    from posefix.config import load_config
    from posefix.data import build_dataset

    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    big_cfg = load_config("r50_256x192", _overrides(Path(a.ann), Path(a.images), None, 0,
                                                    Path(a.out), None))
    small_cfg = load_config("r50_256x192", _overrides(SHARED / "coco" / "test_coco.json",
                                                      SHARED / "coco", None, 0, Path(a.out),
                                                      None))
    big, small = build_dataset(big_cfg, "train"), build_dataset(small_cfg, "train")
    print(f"big: {_table_info(big)}; small: {_table_info(small)}")
    rng = np.random.default_rng(0)
    rates: dict[str, list[tuple[float, float]]] = {"big": [], "small": []}
    for r in range(a.rounds):
        for name, ds in (("big", big), ("small", small))[::1 if r % 2 == 0 else -1]:
            keys = rng.integers(len(ds), size=a.samples)
            w, c = time.perf_counter(), time.process_time()
            for k in keys:
                ds[(r, int(k))]
            w, c = time.perf_counter() - w, time.process_time() - c
            rates[name].append((a.samples / w, a.samples / c))
    for name, v in rates.items():
        wall = np.median([x for x, _ in v])
        cpu = np.median([x for _, x in v])
        print(f"{name:<6} samples/s: wall {wall:6.1f} (rounds {', '.join(f'{x:.0f}' for x, _ in v)})"
              f", per CPU-second {cpu:6.1f}")
    ratio = [b[1] / s[1] for b, s in zip(rates["big"], rates["small"], strict=True)]
    print(f"big / small per CPU-second, median over paired rounds: {np.median(ratio):.3f}")


def cmd_sampler(a: argparse.Namespace) -> None:
    import torch

    anns = [] if a.length else json.loads(Path(a.ann).read_text())["annotations"]
    n = a.length or sum(1 for x in anns if x["num_keypoints"] > 0 and not x["iscrowd"])

    class Keys(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, key: tuple[int, int]) -> int:
            return key[1]

    for world in (2, 4):
        odd = next((b for b in range(2000, 0, -1) if n % (b * world) == 1), 1000)
        for bs, accum in ((32, 1), (32, 4), (odd, 1)):
            t = time.perf_counter()
            ok, detail = _check_sampler(Keys(), n, world, bs, accum)
            print(f"{n} samples, {world} processes, batch {bs} x accumulate {accum}: "
                  f"{'OK' if ok else 'FAILED'} ({detail}; {time.perf_counter() - t:.0f} s)")


def _epoch(ds, world: int, bs: int, accum: int, epoch: int, start: int) -> list[list[list[int]]]:
    """Per step, per rank: the indices train.py's loop takes from the real DataLoader
    (``micro_batches`` sizes), from global position ``start`` of the epoch."""
    from torch.utils.data import DataLoader

    from posefix.data import ResumableSampler
    from posefix.train import micro_batches

    samplers = [ResumableSampler(ds, num_replicas=world, rank=r, seed=0) for r in range(world)]
    its = []
    for s in samplers:
        s.set_epoch(epoch)
        s.set_start(start)
        its.append(iter(DataLoader(ds, batch_size=bs, sampler=s, collate_fn=list)))
    steps = {s.steps(bs * accum) for s in samplers}
    assert len(steps) == 1, f"ranks disagree on the number of steps: {steps}"
    out = []
    for k in range(steps.pop()):
        per_rank = []
        for s, it in zip(samplers, its, strict=True):
            sizes, total = micro_batches(s, k, bs, accum)
            keys: list[int] = []
            for size in sizes:
                if size:
                    batch = next(it)
                    assert len(batch) == size
                    keys += batch
            per_rank.append(keys)
        assert total == sum(map(len, per_rank))
        out.append(per_rank)
    assert all(next(it, None) is None for it in its)  # nothing left over
    return out


def _check_sampler(ds, n: int, world: int, bs: int, accum: int) -> tuple[bool, str]:
    """Every index once per epoch across ranks, by steps as train.py runs them, and after
    a resume half-way through the epoch (the same steps as the uninterrupted run)."""
    g = world * bs * accum
    for epoch in (0, 1):
        steps = _epoch(ds, world, bs, accum, epoch, 0)
        seen = np.bincount([i for st in steps for r in st for i in r], minlength=n)
        if not (seen == 1).all():
            return False, f"epoch {epoch}: counts {np.bincount(seen)}"
        k = len(steps) // 2
        if _epoch(ds, world, bs, accum, epoch, k * g) != steps[k:]:
            return False, f"epoch {epoch}: resuming at step {k} gives other steps"
    last = [len(r) for r in steps[-1]]
    return True, (f"{len(steps)} steps an epoch, the same after a resume at step {k}; last "
                  f"step's samples per rank {last}")


def main() -> None:
    """Run one measurement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("startup", "phases", "epochs", "rate", "sampler"):
        p = sub.add_parser(name)
        p.add_argument("--ann", default=str(TRAIN))
        p.add_argument("--images", default=str(SHARED))
        p.add_argument("--out", default=str(REPO / "runs" / "scale" / f"bench_{name}"))
        p.add_argument("--workers", type=int, default=2)
        if name in ("startup", "phases"):
            p.add_argument("--val", default=str(VAL), help="'' for none")
        if name == "startup":
            p.add_argument("--steps", type=int, default=5)
            p.add_argument("--backbone", default="resnet18")
            p.add_argument("--timeout", type=float, default=540)
        if name == "epochs":
            p.add_argument("--epochs", type=int, default=2)
            p.add_argument("--interval", type=float, default=5.0)
            p.add_argument("--input-size", default=None,
                           help="crop height,width (default: the recipe's 256,192); memory "
                                "does not depend on it, the time per epoch does")
        if name == "rate":
            p.add_argument("--rounds", type=int, default=7)
            p.add_argument("--samples", type=int, default=100)
        if name == "sampler":
            p.add_argument("--length", type=int, default=None)
    a = ap.parse_args()
    {"startup": cmd_startup, "phases": cmd_phases, "epochs": cmd_epochs, "rate": cmd_rate,
     "sampler": cmd_sampler}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
