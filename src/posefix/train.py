"""Training: plain PyTorch DistributedDataParallel, resumable at any step.

One process per GPU, launched by ``torchrun`` (or a plain ``posefix train`` for one
process). The effective batch is ``optim.batch_size x processes x optim.accumulate``.

One GPU (or the CPU)::

    posefix train r50_256x192 run.out_dir=runs/r50

Several GPUs of one machine (here 8)::

    torchrun --standalone --nproc_per_node=8 -m posefix.cli train r50_256x192 run.out_dir=runs/r50

Several machines (here 2 x 8 GPUs; run on every machine, node_rank 0 and 1)::

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
        --master_port=29500 -m posefix.cli train r50_256x192 run.out_dir=/shared/runs/r50

Every machine must see ``run.out_dir`` (shared storage): rank 0 writes the checkpoints
and every process resumes from them (processes that find different checkpoints stop with
an error). Processes talk over NCCL on CUDA and gloo on the CPU. A killed run restarts from its latest checkpoint with the same
command (``--resume auto``, the default) and reaches the same state as an uninterrupted
run: samples are a pure function of ``(seed, epoch, index)``
(:mod:`posefix.data`) and the checkpoint holds the model, optimizer, scheduler, gradient
scaler, step, epoch, position within the epoch and RNG states (and the weights' moving
average with ``optim.ema_decay``). Every sample is trained on exactly once per epoch
across the processes: nothing is padded or dropped, the last step of an epoch takes the
remainder (a process left without a sample there joins the step with a zero-weighted one).

Files in ``run.out_dir``: ``last.pt`` (training state, every ``run.checkpoint_every``
steps and at each epoch end), ``final.pt`` (weights, the moving average with ``optim.ema_decay``, + config + spec: what
``posefix refine --checkpoint`` loads), ``log.csv`` / ``val.csv`` (or ``tb/`` with
``run.log=tensorboard``) and ``config.yaml``.

The tests check this on the CPU (weights equal within float tolerance after a SIGKILL and
resume); on CUDA, cuDNN's autotuned kernels (``cudnn.benchmark``) are not bitwise
deterministic, so resumed and uninterrupted runs agree only as closely as two
uninterrupted runs do.
On a small shared CPU, ``OMP_NUM_THREADS=1`` can be much faster than torch's default thread
team (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate

from .checkpoint import (
    capture_rng_state,
    init_weights_from,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import Config, ConfigError, config_to_dict
from .data import PoseFixDataset, ResumableSampler, build_dataset, worker_init
from .geometry import apply_affine, invert_affine
from .heatmaps import pixels_to_heatmap
from .imagenet import normalize
from .io import Detections
from .loss import error_head_loss, integral_loss
from .model import PoseFixNet, build_model
from .spec import load_spec

__all__ = ["DistInfo", "TrainState", "build_train_loader", "compute_loss", "micro_batches",
           "setup_distributed", "train", "validate"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that logs and writes files)."""
        return self.rank == 0


@dataclass
class TrainState:
    """What a training callback sees after each optimizer step."""

    step: int
    epoch: int
    total_steps: int
    model: PoseFixNet  # the bare network (not the DDP wrapper)
    loss: float | None  # the last logged mean loss (None before the first log)
    rank: int


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under
    torchrun each process takes ``cuda:LOCAL_RANK``. The backend is NCCL on CUDA, gloo on
    the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device.split(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda requested but no CUDA device is available")
    if kind == "cuda":
        dev = torch.device("cuda", local if world > 1 or ":" not in device
                           else int(device.split(":")[1]))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        # Generous: the other ranks wait while rank 0 validates and writes checkpoints.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2), **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


# --------------------------------------------------------------------------- logging
class _Logger:
    """Rank 0's metrics: CSV files (default) or TensorBoard."""

    def __init__(self, out_dir: Path, kind: str, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.out_dir = out_dir
        self.tb = None
        if not enabled:
            return
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=resume_step)
            except ImportError:
                warnings.warn("run.log=tensorboard but tensorboard is not installed; "
                              "logging to CSV", stacklevel=4)
        for name in ("log.csv", "val.csv"):
            self._truncate(out_dir / name, resume_step)

    @staticmethod
    def _truncate(path: Path, resume_step: int | None) -> None:
        """Drop rows logged after the checkpoint a run resumes from (or all: a fresh run)."""
        if not path.is_file():
            return
        if resume_step is None:
            path.unlink()
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["step"]) <= resume_step]
        if rows and len(keep) < len(rows):
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(keep)

    def write(self, name: str, row: dict[str, Any]) -> None:
        """Append one row of scalars to ``name`` (``log`` or ``val``)."""
        if not self.enabled:
            return
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{name}/{k}", v, row["step"])
            self.tb.flush()
            return
        path = self.out_dir / f"{name}.csv"
        new = not path.is_file()
        if not new:
            with path.open(newline="") as f:
                fields = next(csv.reader(f), None)
            if fields != list(row):
                new = True  # a different set of columns (e.g. other val sets): start over
        with path.open("w" if new else "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def close(self) -> None:
        """Flush and close."""
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- validation
def _unwrap(model: nn.Module) -> PoseFixNet:
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore


def _loader(ds: PoseFixDataset, batch_size: int, workers: int, pin: bool,
            sampler: Any = None, persistent: bool = False) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, pin_memory=pin, drop_last=False,
                      worker_init_fn=worker_init if workers > 0 else None,
                      persistent_workers=persistent and workers > 0)


def build_train_loader(cfg: Config, dataset: PoseFixDataset, info: DistInfo
                       ) -> tuple[DataLoader, ResumableSampler]:
    """The training DataLoader of one process and its resumable distributed sampler.

    ``data.workers`` persistent worker processes (one thread each), pinned memory on CUDA.
    Every sample comes once per epoch across the processes: the last batches of an epoch
    can be smaller (see :meth:`ResumableSampler.step_share` for how many each process gets).
    """
    sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                               shuffle=True, seed=cfg.run.seed)
    loader = _loader(dataset, cfg.optim.batch_size, cfg.data.workers,
                     info.device.type == "cuda", sampler, persistent=True)
    return loader, sampler


def micro_batches(sampler: ResumableSampler, step: int, batch_size: int, accumulate: int
                  ) -> tuple[list[int], int]:
    """Sizes of this process's micro-batches in ``step`` of the epoch (counted from the
    sampler's start), and the number of crops of the step on all processes.

    Full steps: ``accumulate`` micro-batches of ``batch_size`` on every process. The epoch's
    last step takes what is left: fewer or smaller micro-batches, or ``[0]`` (no sample:
    the process joins the step with a zero-weighted stand-in).
    """
    mine, total = sampler.step_share(step, batch_size * accumulate)
    return [min(batch_size, mine - i) for i in range(0, mine, batch_size)] or [0], total


def _stand_in(dataset: PoseFixDataset, epoch: int) -> dict[str, Any]:
    """A one-crop batch for a process that has no sample in a step (its loss is weighted
    zero; it only lets the process join the step's collective operations)."""
    return default_collate([dataset[(epoch, 0)]])


def compute_loss(model: nn.Module, batch: dict[str, Any], device: torch.device, stride: int,
                 amp_dtype: torch.dtype | None = None, error_weight: float = 1.0,
                 ) -> dict[str, torch.Tensor]:
    """Move a training batch to ``device``, run the network, return the integral loss.

    uint8 crops are normalized on the device; the forward runs under autocast when
    ``amp_dtype`` is given, the loss in float32. A network with an error head adds its
    binary cross-entropy, or a kind head its softmax cross-entropy (``err``, weighted by
    ``error_weight``), to ``loss``.
    """
    images = batch["image"].to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize(images)
    pose = batch["input_pose"].to(device, non_blocking=True)
    target = pixels_to_heatmap(batch["target"].to(device, non_blocking=True), stride)
    valid = batch["target_valid"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        logits, error_logits, kind_logits = model(images, pose, with_kinds=True)
    losses = integral_loss(logits.float(), target, valid)
    if error_logits is not None:
        err = error_head_loss(error_logits if kind_logits is None else kind_logits,
                              batch["meta"]["types"], pose[..., 2])
        losses["loss"] = losses["loss"] + error_weight * err
        losses["err"] = err
    return losses


@torch.no_grad()
def validate(model: PoseFixNet, dataset: PoseFixDataset, *, batch_size: int = 32,
             workers: int = 0, device: torch.device | str = "cpu",
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """AP of the synthesized inputs and of the refined poses on a validation dataset.

    Every held-out person gets a fixed-seed synthesized input (score 1); the refined pose
    keeps the same person score and takes the heatmap confidence per keypoint. Returns
    ``AP_input``/``AP_refined`` (person-weighted mean over the sets), per set
    ``<set>/AP_input``/``<set>/AP_refined``, and ``err_input``/``err_refined``: mean
    distance in crop pixels to the ground truth over the valid targets. Empty: ``{}``.
    """
    from .evaluate import evaluate

    table = dataset.table
    if len(dataset) == 0:
        return {}
    device = torch.device(device)
    was_training = model.training
    model.eval()
    rows, inputs, refined, conf = [], [], [], []
    err_in = err_out = count = 0.0
    loader = _loader(dataset, batch_size, workers, device.type == "cuda")
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        images = normalize(images) if images.dtype == torch.uint8 else images
        pose = batch["input_pose"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            coords, c = model.predict(images, pose)
        coords, c = coords.float().cpu(), c.float().cpu()
        valid = batch["target_valid"]
        target = batch["target"]
        err_out += float(((coords - target).norm(dim=-1) * valid).sum())
        err_in += float(((pose[..., :2].cpu() - target).norm(dim=-1) * valid).sum())
        count += float(valid.sum())
        inv = invert_affine(batch["meta"]["affine"].numpy())
        refined.append(apply_affine(coords.numpy(), inv))
        conf.append(c.numpy())
        inputs.append(batch["meta"]["input_image"].numpy())
        rows.append(batch["meta"]["person"].numpy())
    model.train(was_training)
    row = np.concatenate(rows)
    inputs_a, refined_a, conf_a = np.concatenate(inputs), np.concatenate(refined), \
        np.concatenate(conf)
    out: dict[str, float] = {}
    weights, ap_in, ap_out = [], [], []
    for s, gt in enumerate(table.gts):
        sel = table.source[row] == s
        if not sel.any():
            continue
        n = int(sel.sum())
        ids = table.image_ids[row[sel]]
        ones = np.ones(n)

        def dets(kp: np.ndarray, scores: np.ndarray, ids: np.ndarray = ids,
                 ones: np.ndarray = ones) -> Detections:
            return Detections(image_ids=ids, keypoints=np.concatenate([kp, scores[..., None]], -1),
                              scores=ones, boxes=np.full((len(ids), 4), np.nan),
                              category_ids=np.ones(len(ids), dtype=np.int64))

        a_in = float(evaluate(gt, dets(inputs_a[sel, :, :2], inputs_a[sel, :, 2]))["AP"])
        a_out = float(evaluate(gt, dets(refined_a[sel], conf_a[sel]))["AP"])
        name = Path(gt.path).stem if gt.path else f"set{s}"
        if f"{name}/AP_input" in out:
            name = f"{name}#{s}"
        out[f"{name}/AP_input"], out[f"{name}/AP_refined"] = a_in, a_out
        weights.append(n)
        ap_in.append(a_in)
        ap_out.append(a_out)
    if weights:
        out["AP_input"] = float(np.average(ap_in, weights=weights))
        out["AP_refined"] = float(np.average(ap_out, weights=weights))
    out["err_input"] = err_in / max(count, 1.0)
    out["err_refined"] = err_out / max(count, 1.0)
    return out


# --------------------------------------------------------------------------- checkpoints
def _find_resume(resume: str | Path | None, out_dir: Path) -> Path | None:
    if resume is None or str(resume) in ("no", "none", ""):
        return None
    if str(resume) == "auto":
        last = out_dir / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: file does not exist")
    return path


def _plain_scheduler(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "milestones": {int(k): int(v) for k, v in state["milestones"].items()}}


def _rng_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states with the long Python state as a tensor (compact, weights_only-safe)."""
    version, internal, gauss = state["python"]
    return {**state, "python": [version, torch.tensor(internal, dtype=torch.int64), gauss]}


def _rng_plain(state: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = state["python"]
    if isinstance(internal, torch.Tensor):
        internal = tuple(int(v) for v in internal.tolist())
    return {**state, "python": (version, internal, gauss)}


# --------------------------------------------------------------------------- training
@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema``'s floating-point parameters and buffers towards ``model``'s by
    ``1 - decay``; other buffers (BatchNorm's batch counter) are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(m.detach(), 1.0 - decay)
        else:
            e.copy_(m)


def _lr_milestones(cfg: Config, steps_per_epoch: int) -> list[int]:
    return [int(m) * steps_per_epoch for m in cfg.optim.lr_steps]


def train(cfg: Config, resume: str | Path | None = "auto", *,
          callback: Callable[[TrainState], None] | None = None) -> Path:
    """Train a PoseFix refiner; returns the final checkpoint (``run.out_dir/final.pt``).

    Args:
        cfg: the whole configuration.
        resume: ``"auto"`` (``run.out_dir/last.pt`` if it exists), a checkpoint path, or
            ``"no"``/None to start afresh (overwriting the logs).
        callback: called on every rank after each optimizer step with a
            :class:`TrainState` (for tests and tools; an exception stops training).
    """
    info = setup_distributed(cfg.run.device)
    try:
        return _train(cfg, info, resume, callback)
    finally:
        if info.distributed and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Meter:
    """The losses summed since the last ``log`` row, and the crops trained since then."""

    sums: torch.Tensor  # loss, ce, l1, err, micro-batches
    crops: int = 0
    since: float = field(default_factory=time.perf_counter)
    last_loss: float | None = None  # the last logged mean loss

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        """Count one micro-batch's losses."""
        zero = torch.zeros((), device=self.sums.device)
        self.sums += torch.stack([losses["loss"].detach(), losses["ce"].detach(),
                                  losses["l1"].detach(), losses.get("err", zero).detach(),
                                  torch.ones((), device=self.sums.device)])

    def reset(self) -> None:
        """Start the next row."""
        self.sums.zero_()
        self.since, self.crops = time.perf_counter(), 0


@dataclass
class _Run:
    """One process's training run: what its stages build, share and advance."""

    cfg: Config
    info: DistInfo
    spec: Any
    out_dir: Path
    train_ds: PoseFixDataset
    val_ds: PoseFixDataset | None
    loader: DataLoader
    sampler: ResumableSampler
    crops_per_step: int  # per process: optim.batch_size x optim.accumulate
    steps_per_epoch: int
    total_steps: int
    net: PoseFixNet  # the bare network
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    ema: PoseFixNet | None
    callback: Callable[[TrainState], None] | None
    model: nn.Module = field(init=False)  # net, or its DDP wrapper (set by _start)
    step: int = 0
    epoch: int = 0
    epoch_seen: int = 0  # samples of this epoch trained on, by all processes
    resume_path: Path | None = None
    saved_at: int = -1  # the step of the last checkpoint
    validated_at: int = -1  # the step of the last validation
    val_metrics: dict[str, float] = field(default_factory=dict)
    logger: _Logger = field(init=False)  # set by _start
    bar: Any = None  # tqdm progress bar (rank 0 with run.progress)
    meter: _Meter = field(init=False)  # set by _start

    def __post_init__(self) -> None:
        self.model = self.net


def _train(cfg: Config, info: DistInfo, resume: str | Path | None,
           callback: Callable[[TrainState], None] | None) -> Path:
    """Setup, resume, epochs of steps (each epoch's end: checkpoint and validation), finish."""
    run = _setup(cfg, info, callback)
    resume_path = _find_resume(resume, run.out_dir)
    if resume_path is not None:
        _resume(run, resume_path)
    _start(run)
    while run.step < run.total_steps:
        if _train_epoch(run) and run.epoch_seen >= len(run.train_ds):
            _end_epoch(run)
    return _finish(run)


def _setup(cfg: Config, info: DistInfo, callback: Callable[[TrainState], None] | None
           ) -> _Run:
    """A fresh run: seed, data sets, loader and sampler, network, optimizer, learning-rate
    schedule, gradient scaler and EMA (in this order: the network's initialization draws
    from the seeded generator)."""
    device = info.device
    spec = load_spec(cfg.data.spec)
    if not cfg.data.train:
        raise ConfigError("data.train: no training set configured")
    torch.manual_seed(cfg.run.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_ds = build_dataset(cfg, "train")
    if len(train_ds) == 0:
        raise ConfigError("data.train: the training sets hold no person with keypoints")
    val_ds = build_dataset(cfg, "val") if cfg.data.val and cfg.run.val_every > 0 else None
    bs, accum = cfg.optim.batch_size, cfg.optim.accumulate
    crops_per_step = bs * accum
    loader, sampler = build_train_loader(cfg, train_ds, info)
    # Every sample once per epoch: the last step takes the remainder (fewer crops).
    steps_per_epoch = sampler.steps(crops_per_step)
    if len(train_ds) < crops_per_step * info.world_size:
        raise ConfigError(
            f"optim.batch_size: {len(train_ds)} samples over {info.world_size} process(es) "
            f"give no full step of {bs} x {accum} crops; lower optim.batch_size or raise "
            f"data.repeat")
    total_steps = cfg.optim.epochs * steps_per_epoch
    if cfg.optim.max_steps is not None:
        total_steps = min(total_steps, cfg.optim.max_steps)

    net = build_model(cfg.model, spec.num_keypoints, spec.partner_index.tolist(),
                      spec.keypoints)
    if cfg.run.init_from:
        fresh = init_weights_from(net, cfg.run.init_from)
        if fresh and info.rank == 0:
            print(f"run.init_from: {len(fresh)} weights start fresh: {', '.join(fresh[:8])}")
    net = net.to(device)
    if cfg.run.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr,
                                 weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, _lr_milestones(cfg, steps_per_epoch), gamma=cfg.optim.lr_factor)
    amp_dtype = getattr(torch, cfg.optim.amp_dtype) if cfg.optim.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16
                                  and device.type == "cuda")
    ema = copy.deepcopy(net).eval().requires_grad_(False) \
        if cfg.optim.ema_decay is not None else None
    return _Run(cfg=cfg, info=info, spec=spec, out_dir=Path(cfg.run.out_dir),
                train_ds=train_ds, val_ds=val_ds, loader=loader, sampler=sampler,
                crops_per_step=crops_per_step, steps_per_epoch=steps_per_epoch,
                total_steps=total_steps, net=net, optimizer=optimizer, scheduler=scheduler,
                scaler=scaler, amp_dtype=amp_dtype, ema=ema, callback=callback)


def _resume(run: _Run, path: Path) -> None:
    """Load a training checkpoint into ``run``: weights, EMA, optimizer, schedule, scaler,
    counters and RNG states (warnings are attributed to the caller of :func:`train`)."""
    cfg, info = run.cfg, run.info
    ck = load_checkpoint(path)
    ex = ck.extra
    if "optimizer" not in ex:
        raise ConfigError(f"--resume {path}: not a training checkpoint (no "
                          f"optimizer state); use run.out_dir/last.pt")
    if ck.spec.keypoints != run.spec.keypoints or ck.config.model.backbone != \
            cfg.model.backbone or tuple(ck.config.model.input_size) != \
            tuple(cfg.model.input_size):
        raise ConfigError(f"--resume {path}: its model/spec differ from the config")
    run.net.load_state_dict(ck.model.state_dict())
    if run.ema is not None:
        run.ema.load_state_dict(ex["ema"] if "ema" in ex else run.net.state_dict())
    run.optimizer.load_state_dict(ex["optimizer"])
    sched = dict(ex["scheduler"])
    sched["milestones"] = Counter(_lr_milestones(cfg, run.steps_per_epoch))
    run.scheduler.load_state_dict(sched)
    if "scaler" in ex and ex["scaler"]:
        run.scaler.load_state_dict(ex["scaler"])
    run.step, run.epoch = int(ex["step"]), int(ex["epoch"])
    # Samples of this epoch already trained on, by all processes (older checkpoints hold
    # the count per process). The sampler skips them in the epoch's order, so the rest
    # of the epoch is every other sample once, whatever the number of processes now.
    run.epoch_seen = int(ex.get("epoch_samples_seen", int(ex["sample_in_epoch"]) * int(
        ex.get("world_size", info.world_size))))
    if int(ex.get("world_size", info.world_size)) != info.world_size or \
            int(ex.get("crops_per_step", run.crops_per_step)) != run.crops_per_step:
        warnings.warn("resuming with another number of processes or batch size: the "
                      "run continues (every sample still once per epoch) but in other "
                      "batches than the original run", stacklevel=3)
    if int(ex.get("steps_per_epoch", run.steps_per_epoch)) != run.steps_per_epoch:
        warnings.warn("steps per epoch changed since the checkpoint", stacklevel=3)
    restore_rng_state(_rng_plain(ex["rng"]))
    run.resume_path = path


def _start(run: _Run) -> None:
    """Before the first step: the processes check that they resume from the same step and
    wrap the network in DDP; rank 0 opens the logs (dropping rows logged after the resumed
    step), writes ``config.yaml`` and starts the progress bar."""
    cfg, info = run.cfg, run.info
    if info.distributed:
        starts: list[Any] = [None] * info.world_size
        dist.all_gather_object(starts, (run.step, str(run.resume_path)))
        if len({st for st, _ in starts}) > 1:
            raise RuntimeError(
                f"processes resume from different steps {starts}: every machine must see "
                f"the same run.out_dir (shared storage) or get the same --resume file")
        run.model = DistributedDataParallel(
            run.net, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    run.logger = _Logger(run.out_dir, cfg.run.log, info.is_main,
                         run.step if run.resume_path is not None else None)
    if info.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg),
                                                                sort_keys=False))
    if info.is_main and cfg.run.progress:
        from tqdm import tqdm

        run.bar = tqdm(total=run.total_steps, initial=run.step, unit="step",
                       dynamic_ncols=True, desc="train")
    run.meter = _Meter(torch.zeros(5, device=info.device))
    run.model.train()


def _train_epoch(run: _Run) -> bool:
    """Train the rest of ``run.epoch`` (from its ``epoch_seen``-th sample): per step, the
    step, its log row, the progress bar, the callback and the periodic checkpoint. False
    when the run's last step comes before the epoch's end."""
    cfg = run.cfg
    run.sampler.set_epoch(run.epoch)
    run.sampler.set_start(run.epoch_seen)
    batches = iter(run.loader)
    for k in range(run.sampler.steps(run.crops_per_step)):
        if run.step >= run.total_steps:
            return False
        _train_step(run, batches, k)
        _log(run)
        if run.bar is not None:
            run.bar.update(1)
        if run.callback is not None:
            run.callback(TrainState(step=run.step, epoch=run.epoch, total_steps=run.total_steps,
                                    model=run.net, loss=run.meter.last_loss, rank=run.info.rank))
        at_epoch_end = run.epoch_seen >= len(run.train_ds)
        if cfg.run.checkpoint_every and run.step % cfg.run.checkpoint_every == 0 \
                and not at_epoch_end and run.step < run.total_steps:
            _checkpoint(run)
    return True


def _train_step(run: _Run, batches: Iterator[dict[str, Any]], k: int) -> None:
    """Optimizer step ``k`` of the epoch: its micro-batches' gradients (accumulated, all-reduced
    across processes at the last), the optimizer, schedule and EMA updates, the counters."""
    cfg, info, device = run.cfg, run.info, run.info.device
    sizes, step_crops = micro_batches(run.sampler, k, cfg.optim.batch_size, cfg.optim.accumulate)
    run.optimizer.zero_grad(set_to_none=True)
    for micro, size in enumerate(sizes):
        # A rank with no sample in the step still joins DDP's gradient all-reduce,
        # with a zero-weighted stand-in (its BatchNorm statistics are replaced by
        # rank 0's, which always has samples, at the next forward and at the end).
        batch = next(batches) if size else _stand_in(run.train_ds, run.epoch)
        sync = not info.distributed or micro == len(sizes) - 1
        with contextlib.nullcontext() if sync else run.model.no_sync():  # type: ignore
            losses = compute_loss(run.model, batch, device, run.net.stride, run.amp_dtype,
                                  cfg.optim.error_weight)
            # Each micro-batch weighs its share of the step's crops on all ranks
            # (DDP averages over ranks): 1 / accum in a full step.
            loss = losses["loss"] / (step_crops / (size * info.world_size)) if size \
                else losses["loss"] * 0.0
            run.scaler.scale(loss).backward()
        if size:
            run.meter.add(losses)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        ema_update(run.ema, run.net,
                   min(cfg.optim.ema_decay, (1.0 + run.step) / (10.0 + run.step)))
    run.step += 1
    run.epoch_seen += step_crops
    run.meter.crops += step_crops


def _log(run: _Run) -> None:
    """Every ``run.log_every`` steps and after the last: a ``log`` row with the mean losses
    since the previous row (over all processes), the learning rate and the crop rate."""
    if run.step % run.cfg.run.log_every != 0 and run.step != run.total_steps:
        return
    meter = run.meter
    if run.info.distributed:
        dist.all_reduce(meter.sums)
    s = meter.sums.tolist()
    loss, ce, l1, err = (v / max(s[4], 1.0) for v in s[:4])
    if not math.isfinite(loss) and run.amp_dtype is not torch.float16:
        raise FloatingPointError(f"step {run.step}: the loss is {loss}")
    rate = meter.crops / max(time.perf_counter() - meter.since, 1e-9)
    meter.last_loss = loss
    run.logger.write("log", {"step": run.step, "epoch": run.epoch,
                             "lr": run.optimizer.param_groups[0]["lr"], "loss": loss,
                             "ce": ce, "l1": l1,
                             **({"err": err} if run.net.error_head is not None else {}),
                             "crops_per_s": rate})
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{loss:.4f}", crops_s=f"{rate:.1f}", epoch=run.epoch)
    meter.reset()


def _end_epoch(run: _Run) -> None:
    """After an epoch's last step: the next epoch, a checkpoint, and the validation every
    ``run.val_every`` epochs (unless the run ends here: :func:`_finish` validates)."""
    run.epoch += 1
    run.epoch_seen = 0
    _checkpoint(run)
    if run.cfg.run.val_every and run.epoch % run.cfg.run.val_every == 0 \
            and run.step < run.total_steps:
        _validate(run)


def _training_state(run: _Run) -> dict[str, Any]:
    """What ``last.pt`` holds besides the weights, config and spec."""
    return {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": _plain_scheduler(run.scheduler.state_dict()),
        "scaler": run.scaler.state_dict(),
        "step": run.step, "epoch": run.epoch, "epoch_samples_seen": run.epoch_seen,
        "sample_in_epoch": run.epoch_seen // run.info.world_size,  # per process, as before
        "steps_per_epoch": run.steps_per_epoch, "world_size": run.info.world_size,
        "crops_per_step": run.crops_per_step, "rng": _rng_tensors(capture_rng_state()),
        **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
    }


def _checkpoint(run: _Run) -> None:
    """Rank 0 writes ``last.pt`` (once per step)."""
    if run.info.is_main and run.saved_at != run.step:
        save_checkpoint(run.out_dir / "last.pt", model=run.net, config=run.cfg, spec=run.spec,
                        extra=_training_state(run))
    run.saved_at = run.step


def _validate(run: _Run) -> None:
    """Rank 0 validates the EMA (or the network) and logs a ``val`` row; the others wait."""
    if run.val_ds is not None and run.info.is_main:
        run.val_metrics = validate(run.ema if run.ema is not None else run.net, run.val_ds,
                                   batch_size=run.cfg.optim.batch_size,
                                   workers=min(run.cfg.data.workers, 2),
                                   device=run.info.device, amp_dtype=run.amp_dtype)
        if run.val_metrics:
            run.logger.write("val", {"step": run.step, "epoch": run.epoch, **run.val_metrics})
            if run.bar is not None:
                run.bar.write(f"step {run.step} epoch {run.epoch}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in run.val_metrics.items() if "/" not in k))
    if run.info.distributed:
        dist.barrier()
    run.validated_at = run.step


def _finish(run: _Run) -> Path:
    """After the last step: rank 0's BatchNorm statistics everywhere, the last checkpoint,
    the validation (unless the last epoch's end just ran it), and ``final.pt``."""
    info = run.info
    if info.distributed:
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each forward, so
        # after the last one the ranks differ there: end with rank 0's everywhere.
        for buf in run.net.buffers():
            dist.broadcast(buf, 0)
    _checkpoint(run)
    if run.validated_at != run.step:
        _validate(run)
    if run.bar is not None:
        run.bar.close()
    run.logger.close()
    final = run.out_dir / "final.pt"
    if info.is_main:
        save_checkpoint(final, model=run.ema if run.ema is not None else run.net,
                        config=run.cfg, spec=run.spec,
                        extra={"step": run.step, "epoch": run.epoch,
                               "val": dict(run.val_metrics)})
    if info.distributed:
        dist.barrier()
    return final
