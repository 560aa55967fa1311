"""ONNX export: parity with PyTorch, dynamic batch, metadata, atomic write, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from posefix import checkpoint as ckpt_mod  # noqa: E402
from posefix.checkpoint import save_checkpoint  # noqa: E402
from posefix.config import Config, ConfigError, GateOverride, ModelConfig  # noqa: E402
from posefix.decoding import Decoding  # noqa: E402
from posefix.export import OnnxRefiner, export_onnx  # noqa: E402
from posefix.model import build_model  # noqa: E402
from posefix.spec import load_spec  # noqa: E402

SPEC = load_spec("coco17")
K = SPEC.num_keypoints
H, W = 64, 48


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", input_size=(H, W), deconv_channels=32,
                                   pose_skip=1.0))  # the shipped model uses the prior
    cfg.data.bbox_padding = 1.3
    net = build_model(cfg.model, K)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a head whose heatmaps have real, input-dependent peaks
        for m in net.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
        net.final.weight.copy_(torch.randn(net.final.weight.shape, generator=gen) * 0.5)
        for name, b in net.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0, generator=gen)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "model.pt", model=net.eval(),
                           config=cfg, spec=SPEC)


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> Path:
    return export_onnx(checkpoint, checkpoint.parent / "out" / "model.onnx")


def _inputs(b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(b, 3, H, W)).astype(np.float32)
    xy = rng.uniform([0, 0], [W - 1, H - 1], size=(b, K, 2))
    valid = (rng.random((b, K, 1)) > 0.25).astype(np.float64)
    return images, np.concatenate([xy, valid], -1).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch(checkpoint: Path, exported: Path, batch: int) -> None:
    net = ckpt_mod.load_checkpoint(checkpoint).model
    refiner = OnnxRefiner(exported)
    images, pose = _inputs(batch, seed=batch)
    coords, conf = refiner(images, pose)
    t_coords, t_conf = net.predict(torch.from_numpy(images), torch.from_numpy(pose))
    assert coords.shape == (batch, K, 2) and conf.shape == (batch, K)
    assert coords.dtype == np.float32
    # The outputs are non-trivial: refined points spread over the crop.
    assert t_coords.numpy().std() > 1.0
    assert np.abs(coords - t_coords.numpy()).max() < 0.01  # pixels
    assert np.abs(conf - t_conf.numpy()).max() < 1e-4
    with torch.no_grad():
        t_logits = net(torch.from_numpy(images), torch.from_numpy(pose)).numpy()
    out = refiner.run(images, pose)
    assert out["heatmaps"].shape == (batch, K, H // 4, W // 4)
    np.testing.assert_allclose(out["heatmaps"], t_logits, atol=1e-3, rtol=1e-3)


def test_metadata_and_folder(exported: Path) -> None:
    import onnx

    assert sorted(p.name for p in exported.parent.iterdir()) == ["model.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(exported.stat().st_mode) == 0o666 & ~umask  # not private
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert meta["posefix.spec_name"] == "coco17"
    assert json.loads(meta["posefix.input_size"]) == [H, W]
    assert meta["posefix.backbone"] == "resnet18"
    refiner = OnnxRefiner(exported)
    assert refiner.input_size == (H, W) and refiner.num_keypoints == K and refiner.stride == 4
    assert refiner.bbox_padding == pytest.approx(1.3)
    assert refiner.spec is not None and refiner.spec.to_dict() == SPEC.to_dict()


def test_refiner_from_onnx_carries_the_files_spec_size_and_padding(
        checkpoint: Path, exported: Path) -> None:
    from posefix.refiner import Refiner, as_refiner

    r = Refiner.from_onnx(exported)
    assert (r.spec, r.input_size, r.padding) == (SPEC, (H, W), 1.3)
    assert str(r.device) == "cpu" and "onnxruntime" in r.description
    torch_r = Refiner.from_checkpoint(checkpoint, backend="torch", device="cpu")
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 255, (3, H, W, 3), dtype=np.uint8)
    poses = _inputs(3, 4)[1]
    np.testing.assert_allclose(r(crops, poses)[0], torch_r(crops, poses)[0], atol=1e-2)
    wrapped = as_refiner(OnnxRefiner(exported))
    np.testing.assert_array_equal(wrapped(crops, poses)[0], r(crops, poses)[0])
    with pytest.raises(ConfigError, match="no error head"):
        Refiner.from_onnx(exported, error_gate=0.2)
    assert Refiner.from_onnx(exported).decoding == Decoding()  # the file's, as exported


def test_an_export_of_the_earlier_format_decodes_itself(exported: Path, tmp_path: Path) -> None:
    """A ``posefix-onnx/1`` file (no ``posefix.decoding``: its graph applied its gate) runs
    as it is: the refiner applies no gate of its own and refuses another."""
    import onnx

    from posefix.errors import InputError
    from posefix.refiner import Refiner

    model = onnx.load(str(exported))
    props = [(p.key, p.value) for p in model.metadata_props if p.key != "posefix.decoding"]
    del model.metadata_props[:]
    for key, value in props:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, ("posefix-onnx/1" if key == "posefix.format" else value)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    r = Refiner.from_onnx(old, flip=False)
    assert r.decodes_itself and r.error_gate is None
    images, pose = _inputs(2, seed=3)
    crops = np.random.default_rng(1).integers(0, 255, (2, H, W, 3), dtype=np.uint8)
    x, p = r.prepare(crops, pose)
    np.testing.assert_allclose(r(crops, pose)[0], OnnxRefiner(old)(x, p)[0], atol=1e-5)
    with pytest.raises(InputError, match="posefix-onnx/1"):
        Refiner.from_onnx(old, error_gate=0.2)
    with pytest.raises(InputError, match="posefix-onnx/1"):
        r.with_decoding(dataclasses.replace(r.decoding, steps=(0.5,)))
    assert r.with_decoding(dataclasses.replace(r.decoding, flip=True, nms=0.5)).flip


def test_refiner_rejects_wrong_shapes(exported: Path, tmp_path: Path) -> None:
    refiner = OnnxRefiner(exported)
    images, pose = _inputs(2, seed=0)
    with pytest.raises(ValueError, match="images"):
        refiner(images[:, :, :32], pose)
    with pytest.raises(ValueError, match="input_pose"):
        refiner(images, pose[:1])
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        OnnxRefiner(tmp_path / "absent.onnx")


def test_export_default_checkpoint(checkpoint: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import posefix.export as export_mod

    def missing() -> Path:
        raise FileNotFoundError("the shipped demo model is missing")

    monkeypatch.setattr(export_mod, "default_checkpoint_path", missing)
    with pytest.raises(FileNotFoundError, match="demo model"):
        export_onnx(None, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    monkeypatch.setattr(export_mod, "default_checkpoint_path", lambda: checkpoint)
    out = export_onnx(None, tmp_path / "d.onnx")
    assert out == tmp_path / "d.onnx" and OnnxRefiner(out).num_keypoints == K


def test_export_of_missing_checkpoint_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        export_onnx(tmp_path / "nope.pt", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_export(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from posefix.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert OnnxRefiner(out).spec is not None
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert main(["export", "--checkpoint", str(bad), "--onnx", str(tmp_path / "b.onnx")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert not (tmp_path / "b.onnx").exists()


# ------------------------------------------------------------------ MobileNetV2 + error gate
@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileNetV2 refiner with an error head and gate, as the shipped demo model."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="mobilenet_v2", input_size=(H, W),
                                   deconv_channels=32, pose_skip=3.0, error_head=True,
                                   error_gate=0.5))
    net = build_model(cfg.model, K)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in net.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
        net.final.weight.copy_(torch.randn(net.final.weight.shape, generator=gen) * 0.5)
        net.error_head.out.weight.copy_(torch.randn(net.error_head.out.weight.shape,
                                                    generator=gen) * 2.0)
        net.error_head.keypoint.copy_(torch.randn(net.error_head.keypoint.shape,
                                                  generator=gen))
        for name, b in net.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0, generator=gen)
    return save_checkpoint(tmp_path_factory.mktemp("gated") / "model.pt", model=net.eval(),
                           config=cfg, spec=SPEC)


def _crops_and_poses(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    crops = np.random.default_rng(seed).integers(0, 255, (n, H, W, 3), dtype=np.uint8)
    return crops, _inputs(n, seed=seed)[1]


def test_mobilenet_with_error_gate_onnx_matches_pytorch(gated_checkpoint: Path,
                                                        tmp_path: Path) -> None:
    """The checkpoint's gate reaches both backends as its decoding: the same keypoints kept."""
    from posefix.refiner import Refiner

    crops, pose = _crops_and_poses(4, 7)
    exported = export_onnx(gated_checkpoint, tmp_path / "gated.onnx")
    for gate in (None, 0.0):
        onnx_r = Refiner.from_onnx(exported, flip=False, error_gate=gate)
        torch_r = Refiner.from_checkpoint(gated_checkpoint, backend="torch", device="cpu",
                                          flip=False, error_gate=gate)
        assert onnx_r.decoding == torch_r.decoding
        coords, conf, err = onnx_r.refine_batch(crops, pose)
        t_coords, t_conf, t_err = torch_r.refine_batch(crops, pose)
        assert np.abs(err - t_err).max() < 1e-4
        assert np.abs(coords - t_coords).max() < 0.01  # pixels
        assert np.abs(conf - t_conf).max() < 1e-4
        kept = (err < 0.5) & (pose[..., 2] > 0)
        at_input = np.abs(coords - pose[..., :2]).max(-1) < 1e-3
        if gate is None:
            assert 0.1 < kept.mean() < 0.9  # the gate keeps some inputs and refines others
            assert np.abs(err - 0.5).min() > 1e-3  # no decision on the edge
            np.testing.assert_array_equal(at_input[pose[..., 2] > 0], kept[pose[..., 2] > 0])
        else:
            assert not at_input.any()
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert meta["posefix.backbone"] == "mobilenet_v2"
    assert meta["posefix.format"] == "posefix-onnx/2"
    assert Decoding.from_json(meta["posefix.decoding"]) == Decoding(gate=0.5)


def test_error_blend_travels_with_the_export(gated_checkpoint: Path, tmp_path: Path) -> None:
    """A kept keypoint moves the blend's step towards the refined one, as in PyTorch; an
    export's blend is in its metadata, and one graph serves every gate."""
    from posefix.refiner import Refiner

    crops, pose = _crops_and_poses(4, 7)
    refined = Refiner.from_checkpoint(gated_checkpoint, backend="torch", device="cpu",
                                      flip=False, error_gate=0.0)(crops, pose)[0]
    path = export_onnx(gated_checkpoint, tmp_path / "b.onnx",
                       error_gate=GateOverride(blend=0.25))  # the checkpoint's threshold, 0.5
    onnx_r = Refiner.from_onnx(path, flip=False)
    assert onnx_r.decoding == Decoding(gate=0.5, steps=(0.25,), flip=False)
    coords, _, err = onnx_r.refine_batch(crops, pose)
    t_coords = Refiner.from_checkpoint(gated_checkpoint, backend="torch", device="cpu",
                                       flip=False, error_gate=GateOverride(blend=0.25)
                                       )(crops, pose)[0]
    assert np.abs(coords - t_coords).max() < 0.01
    kept = (err < 0.5) & (pose[..., 2] > 0)
    step = pose[..., :2] + 0.25 * (refined - pose[..., :2])
    assert np.abs(coords[kept] - step[kept]).max() < 0.01
    assert np.abs(coords[~kept] - refined[~kept]).max() < 0.01
    assert np.abs(coords[kept] - pose[kept][:, :2]).max() > 0.1  # they did move
    plain = export_onnx(gated_checkpoint, tmp_path / "p.onnx")
    same = {p.read_bytes() for p in (path, plain)}  # the metadata differs, not the graph
    import onnx

    graphs = {onnx.load(str(p)).graph.SerializeToString() for p in (path, plain)}
    assert len(same) == 2 and len(graphs) == 1


def test_error_gate_needs_the_head(checkpoint: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from posefix.cli import main

    out = tmp_path / "x.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out),
                 "--error-gate", "0.5"]) == 2
    assert "no error head" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as e:  # refused when the arguments are parsed
        main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out),
              "--error-blend", "1.5"])
    assert e.value.code == 2
    assert "posefix export: error: argument --error-blend: must be a number in [0, 1], got " \
        "1.5" in capsys.readouterr().err and not out.exists()


def test_cli_gate_options_travel_as_one_override(gated_checkpoint: Path,
                                                 tmp_path: Path) -> None:
    from posefix.cli import main

    out = tmp_path / "x.onnx"
    assert main(["export", "--checkpoint", str(gated_checkpoint), "--onnx", str(out),
                 "--error-blend", "0.2"]) == 0
    assert OnnxRefiner(out).decoding == Decoding(gate=0.5, steps=(0.2,))


def test_an_onnx_file_without_a_spec_needs_one_given(misfit_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    import onnx

    from posefix.errors import InputError
    from posefix.refiner import Refiner, as_refiner

    path = export_onnx(misfit_checkpoint, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != "posefix.spec"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(path))
    with pytest.raises(InputError, match=r"m\.onnx: the ONNX file names no keypoint spec; "
                                         r"pass --checkpoint too"):
        Refiner.from_onnx(path)
    with pytest.raises(InputError, match="names no keypoint spec; pass spec="):
        as_refiner(OnnxRefiner(path))
    given = as_refiner(OnnxRefiner(path), spec="coco17")
    with_ckpt = Refiner.from_onnx(path, checkpoint=misfit_checkpoint)
    assert given.spec.name == with_ckpt.spec.name == "coco17"
    assert given.padding == with_ckpt.padding and given.arrays and with_ckpt.arrays
