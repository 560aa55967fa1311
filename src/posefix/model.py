"""The PoseFix network (paper section 5.1): a ResNet on image + input-pose heatmaps, a
SimpleBaseline deconvolution head, and integral (soft-argmax) coordinate decoding.

The first convolution takes ``3 + K`` channels: the normalized RGB crop followed by one
Gaussian heatmap per input keypoint, rendered inside :meth:`PoseFixNet.forward` on the
model's device. The head outputs K heatmap logits at ``1 / stride`` of the input size
(stride 4 with the default three deconvolutions). See :mod:`posefix.heatmaps` for the
pixel and heatmap-cell conventions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from .config import ConfigError, ModelConfig
from .heatmaps import (
    default_input_sigma,
    heatmap_confidence,
    heatmap_to_pixels,
    local_soft_argmax,
    log_gaussian_prior,
    pixels_to_heatmap,
    render_gaussians,
    soft_argmax,
)

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PoseFixNet",
    "build_model",
    "load_pretrained_backbone",
    "normalize",
]

BACKBONES: dict[str, int] = {  # torchvision ResNet -> channels of its last stage
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
}

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, images in [0, 1]
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)



def normalize(images: Tensor | np.ndarray, *, channels_last: bool = False) -> Tensor:
    """RGB images -> float32 tensors normalized with the ImageNet mean and std.

    Args:
        images: (B, 3, H, W) or (3, H, W) RGB; (..., H, W, 3) with ``channels_last``.
            ``uint8`` values are in [0, 255]; floating values are taken to be in [0, 1].
        channels_last: the channel axis is the last one (as decoded images are).

    Returns:
        float32 tensor of the same layout as the network input, (B, 3, H, W) or (3, H, W).
    """
    x = torch.as_tensor(images)
    if channels_last:
        x = x.movedim(-1, -3)
    if x.shape[-3] != 3:
        raise ValueError(f"expected 3 RGB channels, got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(shape)
    return (x - mean) / std


def _resnet(name: str) -> nn.Module:
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return getattr(torchvision.models, name)(weights=None)


class PoseFixNet(nn.Module):
    """PoseFix refiner: ``(normalized crop, input pose) -> K heatmap logits``.

    Attributes:
        num_keypoints: K.
        input_size: (height, width) of the crop in pixels.
        stride: input pixels per heatmap cell (``2 ** (5 - num_deconv)``).
        heatmap_size: (h, w) of the output maps.
        input_sigma: sigma in pixels of the rendered input-pose Gaussians.
    """

    def __init__(self, cfg: ModelConfig, num_keypoints: int) -> None:
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be positive, got {num_keypoints}")
        stages = int(cfg.backbone_stages)
        if not 1 <= stages <= 4:
            raise ConfigError(f"model.backbone_stages: must be 1..4, got {stages}")
        if not 1 <= cfg.num_deconv <= stages + 1:
            raise ConfigError(f"model.num_deconv: must be 1..{stages + 1} with "
                              f"{stages} backbone stages, got {cfg.num_deconv}")
        if cfg.decode_radius is not None and cfg.decode_radius < 1:
            raise ConfigError(f"model.decode_radius: must be >= 1 cell, got {cfg.decode_radius}")
        h, w = (int(v) for v in cfg.input_size)
        self.stride = 2 ** (stages + 1 - cfg.num_deconv)
        self.backbone_stages = stages
        if h <= 0 or w <= 0 or h % self.stride or w % self.stride:
            raise ConfigError(f"model.input_size: {h}x{w} must be positive multiples of the "
                              f"heatmap stride {self.stride}")
        self.num_keypoints = int(num_keypoints)
        self.input_size = (h, w)
        self.heatmap_size = (h // self.stride, w // self.stride)
        self.input_sigma = default_input_sigma(self.input_size, cfg.input_sigma)
        self.backbone_name = cfg.backbone
        self.decode_radius = cfg.decode_radius
        # Inputs whose sides are not multiples of 32 are zero-padded at the bottom and right,
        # which keeps the pixel grid, and the output is cropped back to heatmap_size.
        out_stride = 2 ** (stages + 1)
        self._pad = ((-w) % out_stride, (-h) % out_stride)

        backbone = _resnet(cfg.backbone)
        backbone.conv1 = nn.Conv2d(3 + self.num_keypoints, 64, kernel_size=7, stride=2,
                                   padding=3, bias=False)
        nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.fc = nn.Identity()  # no classifier: its keys stay out of the state dict
        for i in range(stages + 1, 5):  # stages not kept: out of the state dict too
            setattr(backbone, f"layer{i}", nn.Identity())
        self.backbone = backbone

        layers: list[nn.Module] = []
        in_ch = BACKBONES[cfg.backbone] // 2 ** (4 - stages)
        for _ in range(cfg.num_deconv):
            layers += [
                nn.ConvTranspose2d(in_ch, cfg.deconv_channels, kernel_size=4, stride=2,
                                   padding=1, bias=False),
                nn.BatchNorm2d(cfg.deconv_channels),
                nn.ReLU(inplace=True),
            ]
            in_ch = cfg.deconv_channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(in_ch, self.num_keypoints, kernel_size=1)
        self._init_head()
        # Optional input-pose skip (a posefix extension, see ModelConfig.pose_skip).
        self.pose_skip = (
            nn.Parameter(torch.full((self.num_keypoints,), float(cfg.pose_skip)))
            if cfg.pose_skip is not None else None
        )
        if cfg.pretrained:
            load_pretrained_backbone(self, cfg.pretrained)

    def _init_head(self) -> None:
        """SimpleBaseline initialization of the deconvolution head."""
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def render_input(self, input_pose: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Input-pose heatmaps (B, K, H, W), peak 1, zero for absent keypoints."""
        if input_pose.dim() != 3 or input_pose.shape[1:] != (self.num_keypoints, 3):
            raise ValueError(f"input_pose must be (B, {self.num_keypoints}, 3), "
                             f"got {tuple(input_pose.shape)}")
        h, w = self.input_size
        return render_gaussians(input_pose.float(), h, w, self.input_sigma).to(dtype)

    def forward(self, images: Tensor, input_pose: Tensor) -> Tensor:
        """Heatmap logits (B, K, h, w) for normalized crops (B, 3, H, W) and input poses.

        ``input_pose`` is (B, K, 3): ``x, y, valid`` in input pixels.
        """
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.input_size:
            raise ValueError(f"images must be (B, 3, {self.input_size[0]}, {self.input_size[1]}),"
                             f" got {tuple(images.shape)}")
        x = torch.cat([images, self.render_input(input_pose, images.dtype)], dim=1)
        if self._pad != (0, 0):
            x = F.pad(x, (0, self._pad[0], 0, self._pad[1]))
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        x = self.final(self.deconv(x))
        hh, ww = self.heatmap_size
        x = x[:, :, :hh, :ww]
        if self.pose_skip is not None:
            cells = torch.cat([pixels_to_heatmap(input_pose[..., :2].float(), self.stride),
                               input_pose[..., 2:3].float()], dim=-1)
            prior = log_gaussian_prior(cells, hh, ww, self.input_sigma / self.stride)
            # in float32 even under autocast: bfloat16 would round the prior's slope
            x = x.float() + self.pose_skip.view(1, -1, 1, 1).float() * prior.float()
        return x

    def decode(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits -> (coords (B, K, 2) in input pixels, confidence (B, K)).

        Soft-argmax in heatmap cells (over the whole map, or within ``decode_radius`` cells of
        its argmax), mapped with ``pixel = (cell + 0.5) * stride - 0.5``.
        """
        cells = (soft_argmax(logits) if self.decode_radius is None
                 else local_soft_argmax(logits, self.decode_radius))
        coords = heatmap_to_pixels(cells, self.stride)
        return coords, heatmap_confidence(logits)

    @torch.no_grad()
    def predict(self, images: Tensor, input_pose: Tensor) -> tuple[Tensor, Tensor]:
        """Refined keypoints (B, K, 2) in input pixels and their confidence (B, K); no grad."""
        return self.decode(self(images, input_pose))


def build_model(cfg: ModelConfig, num_keypoints: int) -> PoseFixNet:
    """The PoseFix network of a model config for ``num_keypoints`` keypoints."""
    return PoseFixNet(cfg, num_keypoints)


def load_pretrained_backbone(net: PoseFixNet, path: str | Path) -> None:
    """Load a local torchvision ResNet state-dict file into ``net``'s backbone.

    Every backbone key must be present with its shape (``fc.*`` and the stages beyond
    ``model.backbone_stages`` are ignored). The file's
    3-channel ``conv1`` fills the RGB filters; the K input-pose channels start at zero,
    so the pretrained network initially sees the image as it did in pretraining.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: {path}: file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a bad file
        raise ConfigError(f"model.pretrained: {path}: not a readable state-dict file ({e})"
                          ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"model.pretrained: {path}: expected a dict of tensors "
                          "(a torchvision ResNet state_dict)")
    dropped = ("fc.", *(f"layer{i}." for i in range(net.backbone_stages + 1, 5)))
    state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    own = net.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"model.pretrained: {path}: does not match backbone {net.backbone_name}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    conv = own["conv1.weight"]
    w = state["conv1.weight"]
    if w.shape == (conv.shape[0], 3, *conv.shape[2:]):
        full = torch.zeros_like(conv)
        full[:, :3] = w
        state["conv1.weight"] = full
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
           if state[k].shape != v.shape]
    if bad:
        raise ConfigError(f"model.pretrained: {path}: shape mismatch for backbone "
                          f"{net.backbone_name}: {'; '.join(bad[:3])}")
    net.backbone.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
