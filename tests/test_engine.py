"""A training run's parts built whole (posefix.engine): fresh, resumed, and one epoch of
the loop driven by hand."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

import posefix.engine as E
from posefix.checkpoint import load_checkpoint
from posefix.config import Config, ConfigError, load_config
from posefix.train import TrainState, train, train_one_epoch
from posefix.trainlog import LossMeter


def _tiny(data_dir: Path, out: Path, *extra: str) -> Config:
    """tiny_cpu on the six persons of two COCO images: 12 samples, 3 steps of 4 an epoch."""
    coco = data_dir / "coco" / "test_coco.json"
    sets = f"[{{ann: {coco}, image_files: [000000000785.jpg, 000000197388.jpg]}}]"
    return load_config("tiny_cpu", [
        f"data.train={sets}", "data.val=[]", f"run.out_dir={out}", "run.progress=false",
        "run.val_every=0", "data.workers=0", "run.log_every=1", "optim.batch_size=2",
        "optim.accumulate=2", "data.repeat=2", "optim.epochs=3", "optim.lr_steps=[1]",
        "run.checkpoint_every=2", "model.deconv_channels=16", *extra])


def test_the_training_state_is_frozen_and_has_no_field_set_later() -> None:
    for cls in (E.Engine, E.TrainData, E.TrainParts, E.Position, E.DistInfo):
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, cls
        assert all(f.init for f in dataclasses.fields(cls)), cls
    pos = E.Position().after_step(4).after_step(3)
    assert pos == E.Position(step=2, epoch=0, epoch_seen=7)
    assert pos.next_epoch() == E.Position(step=2, epoch=1, epoch_seen=0)


def test_resume_restores_into_the_parts_before_the_loop(data_dir: Path,
                                                        tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "run")

    def stop(s: TrainState) -> None:
        if s.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, resume="no", callback=stop)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")  # step 4: epoch 1, 4 samples in
    info = E.setup_distributed("cpu")

    eng, pos = E.build_engine(cfg, info, "auto")
    assert pos == E.Position(step=4, epoch=1, epoch_seen=4)
    assert eng.model is eng.parts.net  # one process: no DDP wrapper
    assert (eng.data.steps_per_epoch, eng.data.total_steps, len(eng.data.train_ds)) == \
        (3, 9, 12)
    for k, v in ck.model.state_dict().items():
        assert torch.equal(eng.parts.net.state_dict()[k], v), k
    assert eng.parts.scheduler.last_epoch == 4
    assert eng.parts.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * cfg.optim.lr_factor)
    with (tmp_path / "run" / "log.csv").open() as f:  # rows after step 4 dropped
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]

    fresh, start = E.build_engine(cfg, info, "no")
    assert start == E.Position()
    assert not torch.equal(fresh.parts.net.final.weight, ck.model.final.weight)
    assert fresh.parts.scheduler.last_epoch == 0
    assert not (tmp_path / "run" / "log.csv").exists()  # a fresh run's logs start over


def test_train_one_epoch_advances_the_position_by_the_rest_of_the_epoch(
        data_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "run")
    eng, pos = E.build_engine(cfg, E.setup_distributed("cpu"), "no")
    meter = LossMeter(torch.zeros(5))
    steps: list[tuple[int, int]] = []
    pos = train_one_epoch(eng, pos, meter, lambda s: steps.append((s.step, s.epoch)))
    assert pos == E.Position(step=3, epoch=0, epoch_seen=12)
    assert steps == [(1, 0), (2, 0), (3, 0)]
    assert load_checkpoint(tmp_path / "run" / "last.pt").extra["step"] == 2  # checkpoint_every
    # From the middle of an epoch: only its rest.
    pos = train_one_epoch(eng, E.Position(step=3, epoch=1, epoch_seen=8), meter)
    assert pos == E.Position(step=4, epoch=1, epoch_seen=12)


def test_train_only_steps_the_named_module_and_keeps_the_rest_to_the_bit(
        data_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "run", "model.error_head=true",
                "optim.train_only=[error_head]")
    eng, pos = E.build_engine(cfg, E.setup_distributed("cpu"), "no")
    before = {k: v.clone() for k, v in eng.parts.net.state_dict().items()}
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are checked too
    train_one_epoch(eng, pos, LossMeter(torch.zeros(5)))
    after = eng.parts.net.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith("error_head.") for k in changed), changed
    assert {id(p) for g in eng.parts.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in eng.parts.net.error_head.parameters()}


def test_train_only_names_the_key_and_the_modules_it_could_be(data_dir: Path,
                                                             tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "run", "optim.train_only=[error_haed]")
    with pytest.raises(ConfigError, match=r"optim.train_only: error_haed .*backbone"):
        E.build_engine(cfg, E.setup_distributed("cpu"), "no")
