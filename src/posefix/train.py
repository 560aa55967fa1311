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

:func:`train` runs its stages top to bottom: :func:`posefix.engine.build_engine` builds
every part of the run whole (and restores ``last.pt`` into them), :func:`train_one_epoch`
advances the run's :class:`~posefix.engine.Position` a step at a time, each epoch's end
writes ``last.pt`` and validates, and the end writes ``final.pt``.

The tests check this on the CPU (weights equal within float tolerance after a SIGKILL and
resume); on CUDA, cuDNN's autotuned kernels (``cudnn.benchmark``) are not bitwise
deterministic, so resumed and uninterrupted runs agree only as closely as two
uninterrupted runs do.
On a small shared CPU, ``OMP_NUM_THREADS=1`` can be much faster than torch's default thread
team (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import default_collate

from .checkpoint import save_checkpoint
from .config import Config
from .data import PoseFixDataset, ResumableSampler
from .decoding import Decoding
from .engine import (
    DistInfo,
    Engine,
    Position,
    build_engine,
    build_train_loader,
    data_loader,
    hold_frozen,
    save_last,
    setup_distributed,
)
from .geometry import apply_affine, invert_affine
from .heatmaps import pixels_to_heatmap
from .imagenet import normalize
from .io import Detections
from .loss import error_head_loss, integral_loss
from .model import PoseFixNet
from .trainlog import LossMeter

__all__ = ["DistInfo", "TrainState", "build_train_loader", "compute_loss", "ema_update",
           "micro_batches", "setup_distributed", "train", "train_one_epoch", "validate"]


@dataclass
class TrainState:
    """What a training callback sees after each optimizer step."""

    step: int
    epoch: int
    total_steps: int
    model: PoseFixNet  # the bare network (not the DDP wrapper)
    loss: float | None  # the last logged mean loss (None before the first log)
    rank: int


# --------------------------------------------------------------------------- the run
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


def _train(cfg: Config, info: DistInfo, resume: str | Path | None,
           callback: Callable[[TrainState], None] | None) -> Path:
    """The run's stages: build (and resume), epochs (each one's end: checkpoint and
    validation every ``run.val_every`` epochs), finish."""
    eng, pos = build_engine(cfg, info, resume)
    meter = LossMeter(torch.zeros(5, device=info.device))
    at_epoch_end = False
    while pos.step < eng.data.total_steps:
        pos = train_one_epoch(eng, pos, meter, callback)
        # Stopped at the epoch's end, or at the run's last step inside the epoch.
        at_epoch_end = pos.epoch_seen >= len(eng.data.train_ds)
        if at_epoch_end:
            pos = pos.next_epoch()
            save_last(eng, pos)
            if cfg.run.val_every and pos.epoch % cfg.run.val_every == 0 \
                    and pos.step < eng.data.total_steps:  # else _finish validates
                _validate_and_log(eng, pos)
    return _finish(eng, pos, saved=at_epoch_end)


def train_one_epoch(eng: Engine, pos: Position, meter: LossMeter,
                    callback: Callable[[TrainState], None] | None = None) -> Position:
    """Train the rest of ``pos.epoch`` (from its ``pos.epoch_seen``-th sample), or up to the
    run's last step: per step, the step, its log row, the progress bar, the callback and
    the periodic checkpoint. Returns the position reached."""
    cfg, data = eng.cfg, eng.data
    eng.model.train()
    hold_frozen(eng.parts.net, cfg.optim.train_only)
    data.sampler.set_epoch(pos.epoch)
    data.sampler.set_start(pos.epoch_seen)
    batches = iter(data.loader)
    for k in range(data.sampler.steps(data.crops_per_step)):
        if pos.step >= data.total_steps:
            break
        pos = _train_step(eng, pos, batches, k, meter)
        _log(eng, pos, meter)
        if eng.bar is not None:
            eng.bar.update(1)
        if callback is not None:
            callback(TrainState(step=pos.step, epoch=pos.epoch, total_steps=data.total_steps,
                                model=eng.parts.net, loss=meter.last_loss,
                                rank=eng.info.rank))
        every = cfg.run.checkpoint_every
        if every and pos.step % every == 0 and pos.epoch_seen < len(data.train_ds) \
                and pos.step < data.total_steps:  # the epoch's or the run's end saves
            save_last(eng, pos)
    return pos


def _train_step(eng: Engine, pos: Position, batches: Iterator[dict[str, Any]], k: int,
                meter: LossMeter) -> Position:
    """Optimizer step ``k`` of the epoch: its micro-batches' gradients (accumulated,
    all-reduced across processes at the last), the optimizer, schedule and EMA updates."""
    cfg, info, parts = eng.cfg, eng.info, eng.parts
    sizes, step_crops = micro_batches(eng.data.sampler, k, cfg.optim.batch_size,
                                      cfg.optim.accumulate)
    parts.optimizer.zero_grad(set_to_none=True)
    for micro, size in enumerate(sizes):
        # A rank with no sample in the step still joins DDP's gradient all-reduce,
        # with a zero-weighted stand-in (its BatchNorm statistics are replaced by
        # rank 0's, which always has samples, at the next forward and at the end).
        batch = next(batches) if size else _stand_in(eng.data.train_ds, pos.epoch)
        sync = not info.distributed or micro == len(sizes) - 1
        with contextlib.nullcontext() if sync else eng.model.no_sync():  # type: ignore
            losses = compute_loss(eng.model, batch, info.device, parts.net.stride,
                                  parts.amp_dtype, cfg.optim.error_weight)
            # Each micro-batch weighs its share of the step's crops on all ranks
            # (DDP averages over ranks): 1 / accum in a full step.
            loss = losses["loss"] / (step_crops / (size * info.world_size)) if size \
                else losses["loss"] * 0.0
            parts.scaler.scale(loss).backward()
        if size:
            meter.add(losses)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    if parts.ema is not None:
        ema_update(parts.ema, parts.net,
                   min(cfg.optim.ema_decay, (1.0 + pos.step) / (10.0 + pos.step)))
    meter.crops += step_crops
    return pos.after_step(step_crops)


def _log(eng: Engine, pos: Position, meter: LossMeter) -> None:
    """Every ``run.log_every`` steps and after the last: a ``log`` row with the mean losses
    since the previous row (over all processes), the learning rate and the crop rate."""
    if pos.step % eng.cfg.run.log_every != 0 and pos.step != eng.data.total_steps:
        return
    if eng.info.distributed:
        dist.all_reduce(meter.sums)
    s = meter.sums.tolist()
    loss, ce, l1, err = (v / max(s[4], 1.0) for v in s[:4])
    if not math.isfinite(loss) and eng.parts.amp_dtype is not torch.float16:
        raise FloatingPointError(f"step {pos.step}: the loss is {loss}")
    rate = meter.crops / max(time.perf_counter() - meter.since, 1e-9)
    meter.last_loss = loss
    eng.logger.write("log", {"step": pos.step, "epoch": pos.epoch,
                             "lr": eng.parts.optimizer.param_groups[0]["lr"], "loss": loss,
                             "ce": ce, "l1": l1,
                             **({"err": err} if eng.parts.net.error_head is not None else {}),
                             "crops_per_s": rate})
    if eng.bar is not None:
        eng.bar.set_postfix(loss=f"{loss:.4f}", crops_s=f"{rate:.1f}", epoch=pos.epoch)
    meter.reset()


def _validate_and_log(eng: Engine, pos: Position) -> dict[str, float]:
    """Rank 0 validates the EMA (or the network) and logs a ``val`` row; the others wait.
    Returns rank 0's metrics (``{}`` on the others and without validation sets)."""
    parts, metrics = eng.parts, {}
    if eng.data.val_ds is not None and eng.info.is_main:
        metrics = validate(parts.ema if parts.ema is not None else parts.net, eng.data.val_ds,
                           batch_size=eng.cfg.optim.batch_size,
                           workers=min(eng.cfg.data.workers, 2),
                           device=eng.info.device, amp_dtype=parts.amp_dtype,
                           decoding=Decoding.from_model_config(eng.cfg.model,
                                                               eng.spec.keypoints))
        if metrics:
            eng.logger.write("val", {"step": pos.step, "epoch": pos.epoch, **metrics})
            if eng.bar is not None:
                eng.bar.write(f"step {pos.step} epoch {pos.epoch}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in metrics.items() if "/" not in k))
    if eng.info.distributed:
        dist.barrier()
    return metrics


def _finish(eng: Engine, pos: Position, saved: bool) -> Path:
    """After the last step: rank 0's BatchNorm statistics everywhere, the last checkpoint
    (unless the epoch's end just ``saved`` it), the validation and ``final.pt``."""
    info, parts = eng.info, eng.parts
    if info.distributed:
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each forward, so
        # after the last one the ranks differ there: end with rank 0's everywhere.
        for buf in parts.net.buffers():
            dist.broadcast(buf, 0)
    if not saved:
        save_last(eng, pos)
    metrics = _validate_and_log(eng, pos)
    if eng.bar is not None:
        eng.bar.close()
    eng.logger.close()
    final = eng.out_dir / "final.pt"
    if info.is_main:
        save_checkpoint(final, model=parts.ema if parts.ema is not None else parts.net,
                        config=eng.cfg, spec=eng.spec,
                        extra={"step": pos.step, "epoch": pos.epoch, "val": dict(metrics)})
    if info.distributed:
        dist.barrier()
    return final


# --------------------------------------------------------------------------- one step's parts
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
    binary cross-entropy (``err``, weighted by ``error_weight``) to ``loss``.
    """
    images = batch["image"].to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize(images)
    pose = batch["input_pose"].to(device, non_blocking=True)
    target = pixels_to_heatmap(batch["target"].to(device, non_blocking=True), stride)
    valid = batch["target_valid"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        logits, error_logits = model(images, pose, with_error=True)
    losses = integral_loss(logits.float(), target, valid)
    if error_logits is not None:
        err = error_head_loss(error_logits, batch["meta"]["types"], pose[..., 2])
        losses["loss"] = losses["loss"] + error_weight * err
        losses["err"] = err
    return losses


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema``'s floating-point parameters and buffers towards ``model``'s by
    ``1 - decay``; other buffers (BatchNorm's batch counter) are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(m.detach(), 1.0 - decay)
        else:
            e.copy_(m)



# --------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: PoseFixNet, dataset: PoseFixDataset, *, batch_size: int = 32,
             workers: int = 0, device: torch.device | str = "cpu",
             amp_dtype: torch.dtype | None = None,
             decoding: Decoding | None = None) -> dict[str, float]:
    """AP of the synthesized inputs and of the refined poses on a validation dataset,
    decoded with ``decoding``'s gate, steps and hold (None: the heatmaps' keypoints; no
    flip test).

    Every held-out person gets a fixed-seed synthesized input (score 1); the refined pose
    keeps the same person score and takes the heatmap confidence per keypoint. Returns
    ``AP_input``/``AP_refined`` (person-weighted mean over the sets), per set
    ``<set>/AP_input``/``<set>/AP_refined``, and ``err_input``/``err_refined``: mean
    distance in crop pixels to the ground truth over the valid targets. Empty: ``{}``.
    """
    if len(dataset) == 0:
        return {}
    device = torch.device(device)
    was_training = model.training
    model.eval()
    poses, errors = _predict(model, dataset, batch_size, workers, device, amp_dtype,
                             decoding or Decoding())
    model.train(was_training)
    out = _ap_per_set(dataset, *poses)
    err_in, err_out, count = errors
    out["err_input"] = err_in / max(count, 1.0)
    out["err_refined"] = err_out / max(count, 1.0)
    return out


def _predict(model: PoseFixNet, dataset: PoseFixDataset, batch_size: int, workers: int,
             device: torch.device, amp_dtype: torch.dtype | None, decoding: Decoding
             ) -> tuple[tuple[np.ndarray, ...], tuple[float, float, float]]:
    """The network over ``dataset``: per crop, its person's row, the input pose, the
    refined keypoints (in the image) and their confidence; and the summed distances of the
    inputs and of the refined keypoints to the valid targets (crop pixels), their count."""
    rows, inputs, refined, conf = [], [], [], []
    err_in = err_out = count = 0.0
    for batch in data_loader(dataset, batch_size, workers, device.type == "cuda"):
        images = batch["image"].to(device, non_blocking=True)
        images = normalize(images) if images.dtype == torch.uint8 else images
        pose = batch["input_pose"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            coords, c, error = model.predict_with_error(images, pose)
        c = c.float().cpu()
        coords = torch.from_numpy(decoding.place(
            coords.float().cpu().numpy(), c.numpy(),
            None if error is None else error.float().cpu().numpy(), pose.float().cpu().numpy()))
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
    poses = tuple(np.concatenate(a) for a in (rows, inputs, refined, conf))
    return poses, (err_in, err_out, count)


def _ap_per_set(dataset: PoseFixDataset, row: np.ndarray, inputs: np.ndarray,
                refined: np.ndarray, conf: np.ndarray) -> dict[str, float]:
    """AP of the inputs and of the refined poses per ground-truth set of the data set's
    table, and their person-weighted means."""
    from .evaluate import evaluate

    table = dataset.table
    out: dict[str, float] = {}
    weights, ap_in, ap_out = [], [], []
    for s, gt in enumerate(table.gts):
        sel = table.source[row] == s
        if not sel.any():
            continue
        n = int(sel.sum())
        ids = table.image_ids[row[sel]]

        def dets(kp: np.ndarray, scores: np.ndarray, ids: np.ndarray = ids) -> Detections:
            return Detections(image_ids=ids, keypoints=np.concatenate([kp, scores[..., None]], -1),
                              scores=np.ones(len(ids)), boxes=np.full((len(ids), 4), np.nan),
                              category_ids=np.ones(len(ids), dtype=np.int64))

        a_in = float(evaluate(gt, dets(inputs[sel, :, :2], inputs[sel, :, 2]))["AP"])
        a_out = float(evaluate(gt, dets(refined[sel], conf[sel]))["AP"])
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
    return out
