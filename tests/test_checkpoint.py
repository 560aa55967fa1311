"""Checkpoints: round trip, half precision, plain-data extra, errors, atomic writes."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from posefix import checkpoint as ckpt_mod
from posefix.checkpoint import (
    CheckpointError,
    capture_rng_state,
    default_checkpoint_path,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from posefix.config import Config, ModelConfig, config_to_dict
from posefix.errors import InputError
from posefix.model import build_model
from posefix.spec import load_spec

SPEC = load_spec("crowdpose14")


def _config(**kw: object) -> Config:
    model = {"backbone": "resnet18", "input_size": (64, 48), "deconv_channels": 16}
    model.update(kw)
    cfg = Config(model=ModelConfig(**model))  # type: ignore[arg-type]
    cfg.optim.lr = 1e-3
    return cfg


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, Config]:
    torch.manual_seed(0)
    cfg = _config()
    net = build_model(cfg.model, SPEC.num_keypoints)
    with torch.no_grad():  # make every tensor differ from a fresh build
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in net.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
    return net.eval(), cfg


def _inputs(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    pose = torch.cat([torch.rand(2, k, 2, generator=gen) * 40, torch.ones(2, k, 1)], -1)
    return torch.randn(2, 3, 64, 48, generator=gen), pose


def test_round_trip(tmp_path: Path, trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    extra = {"step": 7, "epoch": 2, "optimizer": optim.state_dict(), "rng": capture_rng_state(),
             "history": [1.5, 2.0], "note": "x"}
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", model=net, config=cfg, spec=SPEC,
                           extra=extra)
    assert path == tmp_path / "sub" / "ck.pt" and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]  # no temp file left
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    assert config_to_dict(loaded.config) == config_to_dict(cfg)
    assert loaded.spec.to_dict() == SPEC.to_dict()
    assert loaded.path == path
    own = net.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert value.dtype == own[key].dtype
        assert torch.equal(value, own[key]), key
    assert loaded.extra["step"] == 7 and loaded.extra["history"] == [1.5, 2.0]
    assert loaded.extra["optimizer"]["param_groups"][0]["lr"] == 1e-3
    images, pose = _inputs(SPEC.num_keypoints)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images, pose), net(images, pose))


def test_checkpoint_is_weights_only_plain_data(tmp_path: Path,
                                               trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    path = save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC)
    data = torch.load(path, weights_only=True)
    assert data["format"] == "posefix-checkpoint" and data["version"] == 1
    assert data["half"] is False and data["extra"] == {}
    assert set(data["model"]) == set(net.state_dict())


def test_half_precision(tmp_path: Path, trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    full = save_checkpoint(tmp_path / "full.pt", model=net, config=cfg, spec=SPEC)
    half = save_checkpoint(tmp_path / "half.pt", model=net, config=cfg, spec=SPEC, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    raw = torch.load(half, weights_only=True)["model"]
    assert raw["final.weight"].dtype == torch.float16
    assert raw["backbone.bn1.num_batches_tracked"].dtype == torch.int64
    loaded = load_checkpoint(half)
    own = net.state_dict()
    for key, value in loaded.model.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, own[key], atol=2e-3, rtol=1e-3)
    images, pose = _inputs(SPEC.num_keypoints)
    with torch.no_grad():
        a = loaded.model.decode(loaded.model(images, pose))[0]
        b = net.decode(net(images, pose))[0]
    assert (a - b).abs().max() < 0.5  # pixels


def test_pretrained_file_not_needed_to_load(tmp_path: Path) -> None:
    import torchvision

    pre = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), pre)
    cfg = _config(pretrained=str(pre))
    net = build_model(cfg.model, SPEC.num_keypoints)
    path = save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC)
    pre.unlink()
    loaded = load_checkpoint(path)
    assert loaded.config.model.pretrained == str(pre)
    torch.testing.assert_close(loaded.model.backbone.conv1.weight, net.backbone.conv1.weight)


def test_model_config_and_wrapped_model_are_accepted(
        tmp_path: Path, trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    wrapper = torch.nn.Module()
    wrapper.module = net  # as DistributedDataParallel holds it
    path = save_checkpoint(tmp_path / "ck.pt", model=wrapper, config=cfg.model, spec=SPEC)
    loaded = load_checkpoint(path)
    assert loaded.config.model == cfg.model
    assert torch.equal(loaded.model.final.weight, net.final.weight)


def test_save_rejects_non_plain_extra_and_wrong_spec(
        tmp_path: Path, trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    with pytest.raises(TypeError, match=r"extra\['rng'\]\['np'\].*numpy"):
        save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC,
                        extra={"rng": {"np": np.zeros(3)}})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC,
                        extra={"thing": object()})
    with pytest.raises(ValueError, match="coco17"):
        save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=load_spec("coco17"))
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_file(tmp_path: Path,
                                         trained: tuple[torch.nn.Module, Config],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    net, cfg = trained
    path = save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC,
                           extra={"step": 1})

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=net, config=cfg, spec=SPEC, extra={"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
    assert load_checkpoint(path).extra["step"] == 1


def test_load_errors_name_the_file(tmp_path: Path, trained: tuple[torch.nn.Module, Config]
                                   ) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt.*not a readable"):
        load_checkpoint(garbage)
    net, cfg = trained
    good = save_checkpoint(tmp_path / "good.pt", model=net, config=cfg, spec=SPEC)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(truncated)
    assert str(e.value) == (f"{truncated}: not a readable checkpoint (truncated or corrupt; "
                            "was it copied completely?)")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": net.state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a posefix checkpoint"):
        load_checkpoint(foreign)
    data = torch.load(good, weights_only=True)
    data["config"]["model"]["deconv_channels"] = 8
    mismatch = tmp_path / "mismatch.pt"
    torch.save(data, mismatch)
    with pytest.raises(CheckpointError, match="mismatch.pt.*do not match"):
        load_checkpoint(mismatch)
    data["version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(data, newer)
    with pytest.raises(CheckpointError, match="newer.pt.*version 99"):
        load_checkpoint(newer)
    assert issubclass(CheckpointError, InputError)  # the CLI reports it as one line


def test_default_checkpoint_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import posefix.builtin as builtin

    monkeypatch.setattr(builtin, "__file__", str(tmp_path / "builtin.py"))
    with pytest.raises(FileNotFoundError, match="demo_model.pt"):
        default_checkpoint_path()
    asset = tmp_path / "assets" / "demo_model.pt"
    asset.parent.mkdir()
    asset.write_bytes(b"x")
    assert default_checkpoint_path() == asset


def test_rng_state_round_trip(tmp_path: Path, trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    gen = np.random.default_rng(5)
    gen.random(3)
    state = capture_rng_state(gen)
    expected = (random.random(), torch.rand(3), gen.random(4))
    path = save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC,
                           extra={"rng": state})
    random.random(), torch.rand(5), gen.random(7)  # move every generator on
    other = np.random.default_rng(99)
    restore_rng_state(load_checkpoint(path).extra["rng"], other)
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])
    np.testing.assert_array_equal(other.random(4), expected[2])


def test_saved_checkpoint_follows_the_umask(tmp_path: Path,
                                            trained: tuple[torch.nn.Module, Config]) -> None:
    net, cfg = trained
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck.pt", model=net, config=cfg, spec=SPEC)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
