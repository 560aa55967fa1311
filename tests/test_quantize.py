"""int8 quantization of an export: the deconvolution rewrite is exact, the quantized file
runs with the same interface and stays close to float32, the shipped calibration set is
what refinement feeds the network, errors name what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from posefix.checkpoint import save_checkpoint  # noqa: E402
from posefix.config import Config, ModelConfig  # noqa: E402
from posefix.export import export_onnx  # noqa: E402
from posefix.model import build_model  # noqa: E402
from posefix.onnx_runner import OnnxRefiner  # noqa: E402
from posefix.quantize import (  # noqa: E402
    QuantizeOptions,
    calibration_batches,
    load_calibration,
    quantize_onnx,
    split_deconvolutions,
)
from posefix.refiner import Refiner  # noqa: E402
from posefix.spec import load_spec  # noqa: E402

SPEC = load_spec("coco17")
K = SPEC.num_keypoints
H, W = 64, 48


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MobileNetV2 refiner with an error head (the shipped model's parts: ReLU6,
    residual additions, three deconvolutions with batch norm, the pose prior)."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="mobilenet_v2", input_size=(H, W),
                                   deconv_channels=16, pose_skip=1.0, error_head=True))
    net = build_model(cfg.model, K)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # heatmaps with real, input-dependent peaks; batch norms not trivial
        for m in net.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.1)
        net.final.weight.copy_(torch.randn(net.final.weight.shape, generator=gen) * 0.5)
        for m in net.error_head.modules():  # error probabilities that vary
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.3)
        for name, b in net.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0, generator=gen)
            elif "running_mean" in name:
                b.uniform_(-0.2, 0.2, generator=gen)
    folder = tmp_path_factory.mktemp("quant")
    ckpt = save_checkpoint(folder / "model.pt", model=net.eval(), config=cfg, spec=SPEC)
    return export_onnx(ckpt, folder / "model.onnx")


def _batches(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    xy = rng.uniform([0, 0], [W - 1, H - 1], size=(n, K, 2))
    valid = (rng.random((n, K, 1)) > 0.25).astype(np.float64)
    poses = np.concatenate([xy, valid], -1).astype(np.float32)
    return calibration_batches(crops, poses, SPEC.flip_index, batch_size=8)


@pytest.fixture(scope="module")
def quantized(exported: Path) -> Path:
    return quantize_onnx(exported, exported.parent / "int8" / "model.onnx", _batches(32, 0))


def test_split_deconvolutions_is_exact(exported: Path) -> None:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(exported))
    assert split_deconvolutions(model) == 3
    ops = [n.op_type for n in model.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 3
    assert "BatchNormalization" not in ops  # folded into the phase convolutions
    x, p = _batches(4, 1)[0]
    ref = ort.InferenceSession(str(exported)).run(None, {"images": x, "input_pose": p})
    new = ort.InferenceSession(model.SerializeToString()).run(
        None, {"images": x, "input_pose": p})
    assert ref[2].std() > 0.1  # heatmap logits that vary
    for a, b in zip(ref, new, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_quantized_file_runs_close_to_float32(exported: Path, quantized: Path) -> None:
    import onnx

    ops = [n.op_type for n in onnx.load(str(quantized)).graph.node]
    assert ops.count("QuantizeLinear") > 20 and "ConvTranspose" not in ops
    f32, i8 = OnnxRefiner(exported), OnnxRefiner(quantized)
    assert (i8.input_size, i8.num_keypoints, i8.outputs) == (f32.input_size, K, f32.outputs)
    for x, p in _batches(32, 0)[:2]:  # the calibration batches
        a, b = f32.run(x, p), i8.run(x, p)
        assert not np.array_equal(a["heatmaps"], b["heatmaps"])  # it is another network
        corr = np.corrcoef(a["heatmaps"].ravel(), b["heatmaps"].ravel())[0, 1]
        assert corr > 0.999
        err = np.linalg.norm(a["coords"] - b["coords"], axis=-1)
        assert np.median(err) < 0.1 and a["coords"].std() > 5  # pixels
        assert a["input_error"].std() > 0.01
        assert np.abs(a["input_error"] - b["input_error"]).max() < 0.02


def test_quantized_file_keeps_metadata(exported: Path, quantized: Path) -> None:
    import onnx

    before = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    after = {p.key: p.value for p in onnx.load(str(quantized)).metadata_props}
    info = json.loads(after.pop("posefix.quantization"))
    assert after == before
    assert info["batches"] == 4 and info["deconvolutions_split"] == 3
    assert info["weights"] == "int8 per channel" and info["calibration"] == "minmax"
    assert sorted(p.name for p in quantized.parent.iterdir()) == ["model.onnx"]


def test_calibration_batches_are_what_refinement_feeds(exported: Path) -> None:
    cal = load_calibration()
    assert cal.crops.shape == (64, 128, 96, 3) and cal.crops.dtype == np.uint8
    assert cal.poses.shape == (64, 17, 3) and cal.spec == "coco17"
    assert "training split" in cal.source
    assert cal.crops.std() > 20 and (cal.poses[..., 2] > 0).mean() > 0.5
    refiner = Refiner(OnnxRefiner(exported), (128, 96), SPEC)
    x, p = refiner.prepare(cal.crops[:5], cal.poses[:5])
    (bx, bp), = calibration_batches(cal.crops[:5], cal.poses[:5], SPEC.flip_index, 8)
    np.testing.assert_array_equal(bx, x)
    np.testing.assert_array_equal(bp, p)
    (nx, _), = calibration_batches(cal.crops[:5], cal.poses[:5], None, 8)
    assert nx.shape == (5, 3, 128, 96)


def test_a_resnet_backbone_is_quantized_too(tmp_path: Path) -> None:
    import onnx

    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", input_size=(H, W), deconv_channels=16))
    ckpt = save_checkpoint(tmp_path / "r18.pt", model=build_model(cfg.model, K).eval(),
                           config=cfg, spec=SPEC)
    exported = export_onnx(ckpt, tmp_path / "r18.onnx")
    quantized = quantize_onnx(exported, tmp_path / "r18_int8.onnx", _batches(16, 2))
    graph = onnx.load(str(quantized)).graph
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    int8 = [n.name for n in convs if n.input[0] in quantized_inputs]
    assert any(name.startswith("/net/layer4/") for name in int8)
    assert len(int8) == len(convs) - 1  # all but the stem, which reads the heatmaps
    x, p = _batches(16, 2)[0]
    a, b = OnnxRefiner(exported).run(x, p), OnnxRefiner(quantized).run(x, p)
    assert not np.array_equal(a["heatmaps"], b["heatmaps"])
    assert np.corrcoef(a["heatmaps"].ravel(), b["heatmaps"].ravel())[0, 1] > 0.99  # random


def test_errors_name_what_is_wrong(exported: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(ValueError, match="no batches"):
        quantize_onnx(exported, tmp_path / "a.onnx", [])
    with pytest.raises(ValueError, match="method"):
        quantize_onnx(exported, tmp_path / "a.onnx", _batches(8, 0),
                      QuantizeOptions(method="median"))
    other = tmp_path / "other.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(ValueError, match="other.onnx.*not a posefix export"):
        quantize_onnx(other, tmp_path / "a.onnx", _batches(8, 0))
    assert not (tmp_path / "a.onnx").exists()


def test_import_is_torch_free() -> None:
    code = "import sys, posefix.quantize; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_export_int8_writes_the_default_backends_copy(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str],
                                                          misfit_checkpoint: Path) -> None:
    pytest.importorskip("torch")
    from posefix.cli import main
    from posefix.onnx_runner import OnnxRefiner
    from posefix.refiner import load_refiner

    out = tmp_path / "int8.onnx"
    assert main(["export", "--int8", "--onnx", str(out)]) == 0
    assert "(int8)" in capsys.readouterr().out
    mine = OnnxRefiner(out)
    assert "posefix.quantization" in mine.metadata and mine.spec.name == "coco17"
    monkeypatch.setenv("POSEFIX_CACHE", str(tmp_path / "cache"))
    default = load_refiner(None, "onnxruntime-int8", device="cpu").predict
    cal = load_calibration()
    x, p = calibration_batches(cal.crops[:4], cal.poses[:4], None)[0]
    for a, b in zip(mine(x, p), default(x, p), strict=True):
        np.testing.assert_array_equal(a, b)  # the same file, made the same way
    # a model the shipped set does not fit: one line naming the checkpoint, nothing written
    tiny = misfit_checkpoint
    assert main(["export", "--int8", "--checkpoint", str(tiny), "--onnx",
                 str(tmp_path / "t.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(tiny) in err and "calibration set is for 128x96 coco17" in err
    assert not (tmp_path / "t.onnx").exists()
