"""Training throughput: end to end (DataLoader + model) versus the model alone.

Both measure the same optimizer steps (forward, integral loss, backward, Adam) on the same
kind of batches; "model only" reuses batches already in memory, "end to end" draws them
from the training DataLoader (``data.workers`` persistent workers, crops decoded,
augmented and synthesized on the fly). The difference is what the data pipeline costs::

    .venv/bin/python benchmarks/bench_train.py                    # tiny_cpu on the CPU
    .venv/bin/python benchmarks/bench_train.py --config r50_256x192 --steps 10
    .venv/bin/python benchmarks/bench_train.py --float-images     # normalize in workers

Training data are the tiny_cpu config's (real images of ../shared/data), whatever model
config is measured, so it runs from the repository root without COCO.
"""

from __future__ import annotations

import argparse
import time

import torch

from posefix.config import load_config
from posefix.data import build_dataset
from posefix.model import build_model
from posefix.train import DistInfo, build_train_loader, compute_loss


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, device: torch.device,
          stride: int, amp: torch.dtype | None) -> float:
    opt.zero_grad(set_to_none=True)
    loss = compute_loss(model, batch, device, stride, amp)["loss"]
    loss.backward()
    opt.step()
    return float(loss.detach())


def main() -> None:
    """Measure and print crops/s end to end and model-only."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny_cpu", help="model/optim config to measure")
    ap.add_argument("--steps", type=int, default=5, help="steps per round and measurement")
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="default: the config's")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default=None, choices=["float16", "bfloat16"])
    ap.add_argument("--float-images", action="store_true",
                    help="workers return float32 normalized crops instead of uint8")
    ap.add_argument("--cache-images", type=int, default=None,
                    help="decoded images kept per worker (default: tiny_cpu's; 0 decodes "
                         "every crop's image, as on COCO-sized sets)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (main process)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data_cfg = load_config("tiny_cpu").data
    over = [f"data.workers={a.workers}"] if a.workers is not None else []
    if a.batch_size:
        over.append(f"optim.batch_size={a.batch_size}")
    cfg = load_config(a.config, over)
    cfg.data.train, cfg.data.repeat = data_cfg.train, 1000
    cfg.data.cache_images = data_cfg.cache_images if a.cache_images is None else a.cache_images
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if a.device == "auto" else a.device))
    amp = getattr(torch, a.amp) if a.amp else None

    ds = build_dataset(cfg, "train")
    ds.float_images = a.float_images
    loader, sampler = build_train_loader(cfg, ds, DistInfo(0, 1, 0, dev))
    model = build_model(cfg.model, ds.spec.num_keypoints).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    bs = cfg.optim.batch_size

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # Warm up (workers started, caches filled), keeping batches for the model-only runs.
    it = iter(loader)
    cached = []
    for _ in range(a.warmup):
        b = next(it)
        cached.append(b)
        _step(model, opt, b, dev, model.stride, amp)
    if dev.type == "cuda":
        cached = [{k: v.to(dev) if torch.is_tensor(v) else v for k, v in b.items()}
                  for b in cached]
    # Alternate end-to-end and model-only rounds so that a change in the machine's load
    # (it is shared) hits both measurements alike.
    t_e2e = t_model = 0.0
    ratios = []
    for r in range(a.rounds):
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            _step(model, opt, next(it), dev, model.stride, amp)
        sync()
        d_e2e = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(a.steps):
            _step(model, opt, cached[(r + i) % len(cached)], dev, model.stride, amp)
        sync()
        d_model = time.perf_counter() - t
        t_e2e += d_e2e
        t_model += d_model
        ratios.append(d_model / d_e2e)
    del it
    n = a.rounds * a.steps * bs
    e2e, alone = n / t_e2e, n / t_model
    cost = sorted(1 - x for x in ratios)[len(ratios) // 2]

    print(f"config {a.config} {cfg.model.backbone} {cfg.model.input_size[0]}x"
          f"{cfg.model.input_size[1]} batch {bs} device {dev} workers {cfg.data.workers} "
          f"images {'float32' if a.float_images else 'uint8'} cache {cfg.data.cache_images} "
          f"torch threads {torch.get_num_threads()}")
    print(f"end to end : {e2e:8.1f} crops/s")
    print(f"model only : {alone:8.1f} crops/s")
    print(f"data pipeline cost: {100 * (1 - e2e / alone):.1f}% of model-only throughput "
          f"(median over {a.rounds} alternating rounds: {100 * cost:.1f}%)")


if __name__ == "__main__":
    main()
