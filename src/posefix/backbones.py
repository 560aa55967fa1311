"""Backbones of the PoseFix network: torchvision's ResNets and MobileNetV2, with a first
convolution widened to ``3 + K`` input channels and cut after a number of stages."""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

from .config import ConfigError

__all__ = ["BACKBONES", "MOBILENET_STAGE_END", "backbone_features", "build_backbone",
           "first_conv_key"]

BACKBONES: dict[str, int] = {  # backbone -> channels of its last stage
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "mobilenet_v2": 1280,
}

# torchvision MobileNetV2 ``features`` blocks that end each stage of output stride 4, 8, 16
# and 32 (stage s keeps blocks 0..end-1), and the channels each stage gives out.
MOBILENET_STAGE_END = (4, 7, 14, 19)
MOBILENET_STAGE_CHANNELS = (24, 32, 96, 1280)


def _resnet(name: str, in_channels: int, stages: int) -> tuple[nn.Module, int]:
    """A torchvision ResNet with ``in_channels`` inputs, cut after ``stages`` stages."""
    net = getattr(torchvision.models, name)(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.fc = nn.Identity()  # no classifier: its keys stay out of the state dict
    for i in range(stages + 1, 5):  # stages not kept: out of the state dict too
        setattr(net, f"layer{i}", nn.Identity())
    return net, BACKBONES[name] // 2 ** (4 - stages)


def _mobilenet_v2(in_channels: int, stages: int) -> tuple[nn.Module, int]:
    """torchvision's MobileNetV2 ``features`` with ``in_channels`` inputs, cut after
    ``stages`` stages (of output stride 4, 8, 16, 32)."""
    features = torchvision.models.mobilenet_v2(weights=None).features
    first = features[0][0]
    conv = nn.Conv2d(in_channels, first.out_channels, kernel_size=3, stride=2, padding=1,
                     bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    features[0][0] = conv
    return features[: MOBILENET_STAGE_END[stages - 1]], MOBILENET_STAGE_CHANNELS[stages - 1]


def build_backbone(name: str, in_channels: int, stages: int) -> tuple[nn.Module, int]:
    """Backbone module and the channels of its output."""
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if name == "mobilenet_v2":
        return _mobilenet_v2(in_channels, stages)
    return _resnet(name, in_channels, stages)


def backbone_features(backbone: nn.Module, x: Tensor) -> Tensor:
    """The backbone's last feature map (a ResNet without pooling and classifier, or a
    plain sequence of blocks)."""
    if isinstance(backbone, torchvision.models.ResNet):
        b = backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))
    return backbone(x)


def first_conv_key(backbone: nn.Module) -> str:
    """State-dict key of the backbone's first convolution (the one widened to 3 + K)."""
    return "conv1.weight" if isinstance(backbone, torchvision.models.ResNet) else "0.0.weight"
