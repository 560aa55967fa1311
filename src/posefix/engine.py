"""A training run's parts, built whole before its first step, and its checkpoints.

:func:`build_engine` makes all that one process trains with, in one go: the data sets,
loader and sampler (:class:`TrainData`), the network, its moving average, optimizer,
learning-rate schedule and gradient scaler (:class:`TrainParts`), restores a checkpoint
into them when resuming, then wraps the network in DDP and opens rank 0's logs
(:class:`Engine`). It returns the engine with the :class:`Position` the loop starts from;
the loop (:mod:`posefix.train`) advances the position, and :func:`save_last` writes both
into ``last.pt`` (:func:`training_state`), which :func:`restore` reads back.
"""

from __future__ import annotations

import copy
import datetime
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .checkpoint import (
    capture_rng_state,
    init_weights_from,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import Config, ConfigError, config_to_dict
from .data import PoseFixDataset, ResumableSampler, build_dataset, worker_init
from .decoding import Decoding
from .model import PoseFixNet, build_model
from .spec import KeypointSpec, load_spec
from .trainlog import RunLogger

__all__ = ["DistInfo", "Engine", "Position", "TrainData", "TrainParts", "build_engine",
           "build_train_loader", "data_loader", "find_resume", "restore", "save_last",
           "setup_distributed", "training_state"]


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


@dataclass(frozen=True)
class Position:
    """Where a run stands: optimizer steps taken, the epoch, and the samples of the epoch
    trained on so far by all processes."""

    step: int = 0
    epoch: int = 0
    epoch_seen: int = 0

    def after_step(self, crops: int) -> Position:
        """One optimizer step later, the step having taken ``crops`` crops (all processes)."""
        return replace(self, step=self.step + 1, epoch_seen=self.epoch_seen + crops)

    def next_epoch(self) -> Position:
        """The start of the next epoch."""
        return replace(self, epoch=self.epoch + 1, epoch_seen=0)


@dataclass(frozen=True)
class TrainData:
    """One process's samples: the data sets, the loader and sampler, the run's length."""

    train_ds: PoseFixDataset
    val_ds: PoseFixDataset | None
    loader: DataLoader
    sampler: ResumableSampler
    crops_per_step: int  # per process: optim.batch_size x optim.accumulate
    steps_per_epoch: int
    total_steps: int


@dataclass(frozen=True)
class TrainParts:
    """What the optimizer steps change (all of it in ``last.pt``)."""

    net: PoseFixNet  # the bare network (not the DDP wrapper)
    ema: PoseFixNet | None  # its moving average, with optim.ema_decay
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None


@dataclass(frozen=True)
class Engine:
    """All that one process trains with, built whole by :func:`build_engine`."""

    cfg: Config
    info: DistInfo
    spec: KeypointSpec
    data: TrainData
    parts: TrainParts
    model: nn.Module  # parts.net, or its DDP wrapper
    logger: RunLogger
    bar: Any  # the tqdm progress bar (rank 0 with run.progress), or None

    @property
    def out_dir(self) -> Path:
        """``run.out_dir``."""
        return Path(self.cfg.run.out_dir)


def data_loader(ds: PoseFixDataset, batch_size: int, workers: int, pin: bool,
                sampler: Any = None, persistent: bool = False) -> DataLoader:
    """A DataLoader over ``ds`` in the sampler's (or the data set's) order, nothing dropped."""
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
    loader = data_loader(dataset, cfg.optim.batch_size, cfg.data.workers,
                         info.device.type == "cuda", sampler, persistent=True)
    return loader, sampler


def find_resume(resume: str | Path | None, out_dir: Path) -> Path | None:
    """The checkpoint that ``--resume`` names: ``auto`` is ``out_dir/last.pt`` if it
    exists; ``no``/``none``/empty/None is none."""
    if resume is None or str(resume) in ("no", "none", ""):
        return None
    if str(resume) == "auto":
        last = out_dir / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: file does not exist")
    return path


# --------------------------------------------------------------------------- building
def build_engine(cfg: Config, info: DistInfo, resume: str | Path | None
                 ) -> tuple[Engine, Position]:
    """One process's run, built whole: seed, data, network and optimizer (in this order:
    the network's initialization draws from the seeded generator), the checkpoint that
    ``resume`` names (:func:`find_resume`) restored into them or a fresh start, the
    network wrapped in DDP, and rank 0's logs (rows after the resumed step dropped),
    ``config.yaml`` and progress bar."""
    spec = load_spec(cfg.data.spec)
    if not cfg.data.train:
        raise ConfigError("data.train: no training set configured")
    Decoding.from_model_config(cfg.model, spec.keypoints)  # the keypoint names it reads exist
    torch.manual_seed(cfg.run.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = _build_data(cfg, info)
    parts = _build_parts(cfg, info, spec, data.steps_per_epoch)
    out_dir = Path(cfg.run.out_dir)
    path = find_resume(resume, out_dir)
    pos = Position() if path is None else restore(parts, path, cfg, spec, info, data)
    model = _wrap(parts.net, info, pos, path)
    logger = RunLogger(out_dir, cfg.run.log, info.is_main,
                       pos.step if path is not None else None)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg),
                                                            sort_keys=False))
    bar = None
    if info.is_main and cfg.run.progress:
        from tqdm import tqdm

        bar = tqdm(total=data.total_steps, initial=pos.step, unit="step",
                   dynamic_ncols=True, desc="train")
    engine = Engine(cfg=cfg, info=info, spec=spec, data=data, parts=parts, model=model,
                    logger=logger, bar=bar)
    return engine, pos


def _build_data(cfg: Config, info: DistInfo) -> TrainData:
    """The data sets, the training loader and sampler, and the run's steps (every sample
    once per epoch: the epoch's last step takes the remainder)."""
    train_ds = build_dataset(cfg, "train")
    if len(train_ds) == 0:
        raise ConfigError("data.train: the training sets hold no person with keypoints")
    val_ds = build_dataset(cfg, "val") if cfg.data.val and cfg.run.val_every > 0 else None
    bs, accum = cfg.optim.batch_size, cfg.optim.accumulate
    crops_per_step = bs * accum
    loader, sampler = build_train_loader(cfg, train_ds, info)
    steps_per_epoch = sampler.steps(crops_per_step)
    if len(train_ds) < crops_per_step * info.world_size:
        raise ConfigError(
            f"optim.batch_size: {len(train_ds)} samples over {info.world_size} process(es) "
            f"give no full step of {bs} x {accum} crops; lower optim.batch_size or raise "
            f"data.repeat")
    total_steps = cfg.optim.epochs * steps_per_epoch
    if cfg.optim.max_steps is not None:
        total_steps = min(total_steps, cfg.optim.max_steps)
    return TrainData(train_ds=train_ds, val_ds=val_ds, loader=loader, sampler=sampler,
                     crops_per_step=crops_per_step, steps_per_epoch=steps_per_epoch,
                     total_steps=total_steps)


def _build_parts(cfg: Config, info: DistInfo, spec: KeypointSpec, steps_per_epoch: int
                 ) -> TrainParts:
    """The network (``run.init_from``'s weights, on the device), the optimizer, the
    learning-rate schedule, the gradient scaler and the moving average."""
    device = info.device
    net = build_model(cfg.model, spec.num_keypoints)
    if cfg.run.init_from:
        fresh = init_weights_from(net, cfg.run.init_from)
        if fresh and info.rank == 0:
            print(f"run.init_from: {len(fresh)} weights start fresh: {', '.join(fresh[:8])}")
    net = net.to(device)
    if cfg.run.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(trainable_parameters(net, cfg.optim.train_only), lr=cfg.optim.lr,
                                 weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, _lr_milestones(cfg, steps_per_epoch), gamma=cfg.optim.lr_factor)
    amp_dtype = getattr(torch, cfg.optim.amp_dtype) if cfg.optim.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16
                                  and device.type == "cuda")
    ema = copy.deepcopy(net).eval().requires_grad_(False) \
        if cfg.optim.ema_decay is not None else None
    return TrainParts(net=net, ema=ema, optimizer=optimizer, scheduler=scheduler,
                      scaler=scaler, amp_dtype=amp_dtype)


def trainable_parameters(net: nn.Module, train_only: Sequence[str]) -> list[nn.Parameter]:
    """The parameters the optimizer steps: all of them, or (``optim.train_only``) those
    under the named modules, the others frozen (``requires_grad`` off). Raises ConfigError
    for a name that is not a module of the network."""
    if not train_only:
        return list(net.parameters())
    modules = dict(net.named_modules())
    missing = [name for name in train_only if name not in modules]
    if missing:
        raise ConfigError(f"optim.train_only: {', '.join(missing)} is not a module of the "
                          f"network (has: {', '.join(n for n, _ in net.named_children())})")
    net.requires_grad_(False)
    for name in train_only:
        modules[name].requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def hold_frozen(net: nn.Module, train_only: Sequence[str]) -> None:
    """Put every module outside ``optim.train_only`` in eval mode (after ``train()``), so
    that frozen BatchNorm layers keep their statistics; nothing when training everything."""
    if not train_only:
        return
    for name, module in net.named_modules():
        if not any(name == t or name.startswith(t + ".") for t in train_only):
            module.training = False


def _wrap(net: PoseFixNet, info: DistInfo, pos: Position, resume: Path | None) -> nn.Module:
    """The network as the loop trains it: itself, or (several processes) its DDP wrapper,
    once the processes have checked that they start from the same step."""
    if not info.distributed:
        return net
    starts: list[Any] = [None] * info.world_size
    dist.all_gather_object(starts, (pos.step, str(resume)))
    if len({st for st, _ in starts}) > 1:
        raise RuntimeError(
            f"processes resume from different steps {starts}: every machine must see "
            f"the same run.out_dir (shared storage) or get the same --resume file")
    return DistributedDataParallel(
        net, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def _lr_milestones(cfg: Config, steps_per_epoch: int) -> list[int]:
    return [int(m) * steps_per_epoch for m in cfg.optim.lr_steps]


# --------------------------------------------------------------------------- checkpoints
def training_state(eng: Engine, pos: Position) -> dict[str, Any]:
    """What ``last.pt`` holds besides the weights, config and spec."""
    parts, data, world = eng.parts, eng.data, eng.info.world_size
    return {
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": _plain_scheduler(parts.scheduler.state_dict()),
        "scaler": parts.scaler.state_dict(),
        "step": pos.step, "epoch": pos.epoch, "epoch_samples_seen": pos.epoch_seen,
        "sample_in_epoch": pos.epoch_seen // world,  # per process, as before
        "steps_per_epoch": data.steps_per_epoch, "world_size": world,
        "crops_per_step": data.crops_per_step, "rng": _rng_tensors(capture_rng_state()),
        **({"ema": parts.ema.state_dict()} if parts.ema is not None else {}),
    }


def save_last(eng: Engine, pos: Position) -> None:
    """Rank 0 writes ``last.pt``: the weights, config, spec and :func:`training_state`."""
    if eng.info.is_main:
        save_checkpoint(eng.out_dir / "last.pt", model=eng.parts.net, config=eng.cfg,
                        spec=eng.spec, extra=training_state(eng, pos))


def restore(parts: TrainParts, path: Path, cfg: Config, spec: KeypointSpec, info: DistInfo,
            data: TrainData) -> Position:
    """Load the training checkpoint ``path`` into ``parts`` (weights, EMA, optimizer,
    schedule, scaler) and the RNG states; returns the position it was saved at. Its
    warnings are attributed to :func:`posefix.train.train`."""
    ck = load_checkpoint(path)
    ex = ck.extra
    if "optimizer" not in ex:
        raise ConfigError(f"--resume {path}: not a training checkpoint (no "
                          f"optimizer state); use run.out_dir/last.pt")
    if ck.spec.keypoints != spec.keypoints or ck.config.model.backbone != \
            cfg.model.backbone or tuple(ck.config.model.input_size) != \
            tuple(cfg.model.input_size):
        raise ConfigError(f"--resume {path}: its model/spec differ from the config")
    parts.net.load_state_dict(ck.model.state_dict())
    if parts.ema is not None:
        parts.ema.load_state_dict(ex["ema"] if "ema" in ex else parts.net.state_dict())
    parts.optimizer.load_state_dict(ex["optimizer"])
    sched = dict(ex["scheduler"])
    sched["milestones"] = Counter(_lr_milestones(cfg, data.steps_per_epoch))
    parts.scheduler.load_state_dict(sched)
    if "scaler" in ex and ex["scaler"]:
        parts.scaler.load_state_dict(ex["scaler"])
    # Samples of this epoch already trained on, by all processes (older checkpoints hold
    # the count per process). The sampler skips them in the epoch's order, so the rest
    # of the epoch is every other sample once, whatever the number of processes now.
    world = int(ex.get("world_size", info.world_size))
    seen = int(ex.get("epoch_samples_seen", int(ex["sample_in_epoch"]) * world))
    if world != info.world_size or \
            int(ex.get("crops_per_step", data.crops_per_step)) != data.crops_per_step:
        warnings.warn("resuming with another number of processes or batch size: the "
                      "run continues (every sample still once per epoch) but in other "
                      "batches than the original run", stacklevel=4)
    if int(ex.get("steps_per_epoch", data.steps_per_epoch)) != data.steps_per_epoch:
        warnings.warn("steps per epoch changed since the checkpoint", stacklevel=4)
    restore_rng_state(_rng_plain(ex["rng"]))
    return Position(step=int(ex["step"]), epoch=int(ex["epoch"]), epoch_seen=seen)


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
