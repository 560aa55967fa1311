"""Several gloo processes on a COCO-sized epoch: every sample once per epoch, with a resume.

Runs the real ``posefix.train.train`` under ``torchrun`` with 2 and 4 processes on the CPU
(gloo): its ResumableSampler, DataLoader, steps, gradient accumulation, stand-ins for
processes without a sample in an epoch's last step, DDP all-reduces, checkpoints and
``--resume auto``. Only the per-sample work is replaced so that two whole epochs of
149,813 samples fit in minutes on two cores: the dataset is that many stand-in samples (the
person count of ``runs/scale/train2017.json``; the sampler sees only the length) and the
network sees the first crop of each micro-batch (an 8x8 crop through one ResNet stage).
Every process logs every ``(epoch, index)`` it draws and the step it draws it for::

    python benchmarks/bench_scale_ddp.py                  # 2 and 4 processes
    python benchmarks/bench_scale_ddp.py --length 1000    # quicker

For each number of processes: run A trains 2 epochs with batches chosen so that the last
step of an epoch holds a single sample (the other processes get none), interrupted in
epoch 1 after a checkpoint and resumed; run B trains 1 epoch with gradient accumulation and
a last step of uneven micro-batches. The check: what run A's first part trained before
its checkpoint plus what the resumed part drew is every index exactly once per epoch; run
B likewise.
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

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "runs" / "scale" / "train2017.json"

WORKER = """
import json, os, sys
from pathlib import Path
import torch
import posefix.engine as E
import posefix.train as T
from posefix.checkpoint import load_checkpoint
from posefix.config import load_config

out, n, world = sys.argv[1], int(sys.argv[2]), int(os.environ["WORLD_SIZE"])
log = {"keys": [], "stand_ins": [], "step": 0}

class StandIns(torch.utils.data.Dataset):
    train = True
    def __len__(self):
        return n
    def __getitem__(self, key):
        epoch, index = key
        if log is not None:
            log["keys"].append((int(epoch), int(index), log["step"] + 1))
        valid = torch.zeros(17, dtype=torch.bool)
        valid[index % 17] = True
        return {"image": torch.zeros(3, 8, 8, dtype=torch.uint8),
                "input_pose": torch.zeros(17, 3), "target": torch.full((17, 2), 3.0),
                "target_valid": valid, "meta": {"person": index}}

def stand_in(ds, epoch):  # logged apart from the samples drawn
    global log
    log["stand_ins"].append((epoch, log["step"] + 1))
    saved, log = log, None
    try:
        return T.default_collate([ds[(epoch, 0)]])
    finally:
        log = saved

real_loss = T.compute_loss
def first_crop_loss(model, batch, *args, **kw):
    one = {k: v[:1] if torch.is_tensor(v) else v for k, v in batch.items()}
    return real_loss(model, one, *args, **kw)

E.build_dataset = lambda cfg, split="train", table=None, **kw: StandIns()
T._stand_in = stand_in
T.compute_loss = first_crop_loss
T.dist.init_process_group("gloo")
destroy, T.dist.destroy_process_group = T.dist.destroy_process_group, lambda: None

class Stop(Exception):
    pass

def run(name, tag, extra, stop_at=None):
    cfg = load_config("tiny_cpu", [f"run.out_dir={out}/{name}", "data.val=[]",
        "run.val_every=0", "data.workers=0", "data.repeat=1", "run.progress=false",
        "run.log_every=10", "optim.max_steps=null", "model.input_size=[8,8]",
        "model.backbone_stages=1", "model.num_deconv=1", "model.deconv_channels=16", *extra])
    last = Path(out, name, "last.pt")
    log.update(keys=[], stand_ins=[],
               step=load_checkpoint(last).extra["step"] if last.is_file() else 0)
    def cb(s):
        log["step"] = s.step
        if s.step == stop_at:
            raise Stop
    t = __import__("time").perf_counter()
    try:
        T.train(cfg, resume="auto", callback=cb)
    except Stop:
        pass
    log["seconds"] = __import__("time").perf_counter() - t
    with open(f"{out}/{tag}.rank{os.environ['RANK']}.json", "w") as f:
        json.dump(log, f)

bs_a, every, stop = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
a = [f"optim.batch_size={bs_a}", "optim.epochs=2", f"run.checkpoint_every={every}"]
run("a", "a1", a, stop_at=stop)
run("a", "a2", a)
run("b", "b", ["optim.batch_size=100", "optim.accumulate=3", "optim.epochs=1"])
destroy()
"""


def _person_count(path: Path) -> int:
    anns = json.loads(path.read_text())["annotations"]
    return sum(1 for a in anns if a["num_keypoints"] > 0 and not a["iscrowd"])


def _odd_batch(n: int, world: int) -> int:
    """The largest batch per process below 2,000 whose step leaves exactly 1 sample for
    the epoch's last step (so that every other process has none there), else 1000."""
    for bs in range(2000, 0, -1):
        if n % (bs * world) == 1 and n // (bs * world) >= 3:
            return bs
    return 1000


def _schedule(steps_a: int) -> tuple[int, int, int]:
    """Run A's checkpoint interval, the step it is interrupted after, and its last
    checkpoint before that: in the middle of the second epoch (of ``steps_a`` steps each)."""
    every = max(1, 3 * steps_a // 4)
    stop = 2 * every + 1
    ck = max([m for m in range(every, stop, every)] + ([steps_a] if steps_a < stop else []))
    return every, stop, ck


def _check(tmp: Path, world: int, n: int, steps_a: int) -> list[str]:
    def logs(tag: str) -> list[dict]:
        return [json.loads((tmp / f"{tag}.rank{r}.json").read_text()) for r in range(world)]

    out = []
    a1, a2, b = logs("a1"), logs("a2"), logs("b")
    _, stop, ck = _schedule(steps_a)  # run A's last checkpoint before its interruption
    assert a1[0]["step"] == stop, (a1[0]["step"], stop)
    counts = {0: [0] * n, 1: [0] * n}
    for v in a1:
        for e, i, s in v["keys"]:
            if s <= ck:
                counts[e][i] += 1
    for v in a2:
        for e, i, _ in v["keys"]:
            counts[e][i] += 1
    for e in (0, 1):
        ok = all(c == 1 for c in counts[e])
        out.append(f"run A epoch {e}: every one of {n} samples exactly once: {ok}")
    stand = sorted({tuple(x) for v in a1 + a2 for x in v["stand_ins"]})
    last = [sum(1 for _, _, s in v["keys"] if s == 2 * steps_a) for v in a2]
    out.append(f"run A: {steps_a} steps an epoch; steps with stand-ins (epoch, step): {stand}; "
               f"samples per process in the last step: {last}; interrupted after step {stop}, "
               f"resumed at step {ck + 1}, ended at step {a2[0]['step']}")
    cb = [0] * n
    for v in b:
        for _, i, _ in v["keys"]:
            cb[i] += 1
    steps_b = b[0]["step"]
    per = [sum(1 for _, _, s in v["keys"] if s == steps_b) for v in b]
    out.append(f"run B (batch 100 x accumulate 3): every sample exactly once: "
               f"{all(c == 1 for c in cb)}; {steps_b} steps; samples per process in the "
               f"last step: {per}")
    secs = [round(max(v["seconds"] for v in x)) for x in (a1, a2, b)]
    out.append(f"seconds (run A, resumed A, run B): {secs}")
    return out


def main() -> None:
    """Run and check 2 and 4 processes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann", type=Path, default=TRAIN)
    ap.add_argument("--length", type=int, default=None, help="instead of the file's persons")
    ap.add_argument("--worlds", default="2,4")
    a = ap.parse_args()
    n = a.length or _person_count(a.ann)
    ok = True
    for world in (int(w) for w in a.worlds.split(",")):
        bs = _odd_batch(n, world)
        steps_a = -(-n // (bs * world))
        with tempfile.TemporaryDirectory(prefix="posefix-ddp-") as tmp:
            script = Path(tmp) / "worker.py"
            script.write_text(WORKER)
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={world}", str(script), tmp, str(n), str(bs),
                 *map(str, _schedule(steps_a)[:2])],
                cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                text=True, timeout=3 * 3600)
            print(f"== {world} gloo processes, {n} samples, batch {bs} per process "
                  f"({time.perf_counter() - t:.0f} s)")
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-5000:])
                ok = False
                continue
            for line in _check(Path(tmp), world, n, steps_a):
                print("  " + line)
                ok &= "False" not in line
    print("ALL OK" if ok else "FAILED")


if __name__ == "__main__":
    main()
