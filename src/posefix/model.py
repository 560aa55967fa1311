"""The PoseFix network (paper section 5.1): a ResNet on image + input-pose heatmaps, a
SimpleBaseline deconvolution head, and integral (soft-argmax) coordinate decoding.

The first convolution takes ``3 + K`` channels: the normalized RGB crop followed by one
Gaussian heatmap per input keypoint, rendered inside :meth:`PoseFixNet.forward` on the
model's device. The head outputs K heatmap logits at ``1 / stride`` of the input size
(stride 4 with the default three deconvolutions). See :mod:`posefix.heatmaps` for the
pixel and heatmap-cell conventions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import backbone_features, build_backbone, first_conv_key
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
from .pretrained import load_pretrained_backbone

__all__ = [
    "PoseFixNet",
    "InputErrorHead",
    "build_model",
    "heatmap_evidence",
]


class InputErrorHead(nn.Module):
    """Per input keypoint, the logit of "this input keypoint is a gross error" (a posefix
    extension: ``model.error_head``).

    Reads the head's features at the input keypoint (bilinear, in heatmap cells), the
    backbone's globally pooled features, and what the predicted heatmap says of the input
    (:func:`heatmap_evidence`: its log-probability at the input, its peak, and how far its
    soft-argmax lies from the input), adds a learned embedding of the keypoint type, and
    maps them through one hidden layer to a logit. Trained with binary cross-entropy on the
    synthesized error types (:func:`posefix.loss.error_head_loss`).
    """

    def __init__(self, feature_channels: int, context_channels: int, num_keypoints: int,
                 hidden: int = 64) -> None:
        super().__init__()
        self.local = nn.Linear(feature_channels, hidden)
        self.context = nn.Linear(context_channels, hidden)
        self.evidence = nn.Linear(3, hidden)
        self.keypoint = nn.Parameter(torch.zeros(num_keypoints, hidden))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, -2.0)  # p = 0.12 before training

    def forward(self, features: Tensor, context: Tensor, cells: Tensor, logits: Tensor) -> Tensor:
        """Logits (B, K) from head features (B, C, h, w), backbone output (B, C', h', w'),
        the input keypoints (B, K, 2) in cells of ``features`` and the heatmap logits
        (B, K, h, w) (read, not trained through)."""
        h, w = features.shape[-2:]
        size = torch.tensor([w, h], device=cells.device, dtype=torch.float32)
        grid = ((cells.float() + 0.5) / size * 2 - 1).unsqueeze(2)  # (B, K, 1, 2)
        local = F.grid_sample(features.float(), grid, align_corners=False,
                              padding_mode="border")[..., 0].transpose(1, 2)  # (B, K, C)
        ctx = self.context(context.float().mean((2, 3)))
        pre = (self.local(local) + ctx.unsqueeze(1) + self.keypoint
               + self.evidence(heatmap_evidence(logits.detach(), cells)))
        return self.out(F.relu(pre))[..., 0]


def heatmap_evidence(logits: Tensor, cells: Tensor) -> Tensor:
    """What heatmaps say of given points: (B, K, 3) of the log-probability (softmax over
    the map) at the point's nearest cell, the map's highest log-probability, and the
    distance from the point to the map's soft-argmax in units of 4 cells."""
    b, k, h, w = logits.shape
    lp = torch.log_softmax(logits.float().reshape(b, k, h * w), dim=-1)
    ix = cells[..., 0].round().clamp(0, w - 1).long()
    iy = cells[..., 1].round().clamp(0, h - 1).long()
    at = lp.gather(-1, (iy * w + ix).unsqueeze(-1))[..., 0]
    dist = (soft_argmax(logits.float()) - cells.float()).norm(dim=-1) / 4
    return torch.stack([at, lp.amax(-1), dist], dim=-1)


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

        self.backbone, in_ch = build_backbone(cfg.backbone, 3 + self.num_keypoints, stages)
        backbone_channels = in_ch

        layers: list[nn.Module] = []
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
        # Optional input-error head (a posefix extension, see ModelConfig.error_head).
        self.error_head = (InputErrorHead(in_ch, backbone_channels, self.num_keypoints)
                           if cfg.error_head else None)
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

    def forward(self, images: Tensor, input_pose: Tensor, *, with_error: bool = False
                ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Heatmap logits (B, K, h, w) for normalized crops (B, 3, H, W) and input poses.

        ``input_pose`` is (B, K, 3): ``x, y, valid`` in input pixels. With ``with_error``,
        returns ``(logits, error_logits)``: the error head's (B, K) logits of a gross error,
        or None for a network without one.
        """
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.input_size:
            raise ValueError(f"images must be (B, 3, {self.input_size[0]}, {self.input_size[1]}),"
                             f" got {tuple(images.shape)}")
        x = torch.cat([images, self.render_input(input_pose, images.dtype)], dim=1)
        if self._pad != (0, 0):
            x = F.pad(x, (0, self._pad[0], 0, self._pad[1]))
        stem = self.backbone.get_parameter(first_conv_key(self.backbone))
        if not stem.is_contiguous():  # a model moved to channels_last (run.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        context = backbone_features(self.backbone, x)
        features = self.deconv(context)
        x = self.final(features)
        hh, ww = self.heatmap_size
        x = x[:, :, :hh, :ww]
        cells = pixels_to_heatmap(input_pose[..., :2].float(), self.stride)
        if self.pose_skip is not None:
            prior = log_gaussian_prior(torch.cat([cells, input_pose[..., 2:3].float()], -1),
                                       hh, ww, self.input_sigma / self.stride)
            # in float32 even under autocast: bfloat16 would round the prior's slope
            x = x.float() + self.pose_skip.view(1, -1, 1, 1).float() * prior.float()
        if not with_error:
            return x
        if self.error_head is None:
            return x, None
        return x, self.error_head(features[:, :, :hh, :ww], context, cells, x)

    def decode(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits -> (coords (B, K, 2) in input pixels, confidence (B, K)).

        Soft-argmax in heatmap cells (over the whole map, or within ``decode_radius`` cells of
        its argmax), mapped with ``pixel = (cell + 0.5) * stride - 0.5``. What is done with
        them (the error gate, steps, holding where the confidence is low, the flip test) is
        the refiner's :class:`~posefix.decoding.Decoding`, not the network's.
        """
        cells = (soft_argmax(logits) if self.decode_radius is None
                 else local_soft_argmax(logits, self.decode_radius))
        return heatmap_to_pixels(cells, self.stride), heatmap_confidence(logits)

    @torch.no_grad()
    def predict(self, images: Tensor, input_pose: Tensor) -> tuple[Tensor, Tensor]:
        """The heatmaps' keypoints (B, K, 2) in input pixels and their confidence (B, K); no
        grad."""
        return self.predict_with_error(images, input_pose)[:2]

    @torch.no_grad()
    def predict_with_error(self, images: Tensor, input_pose: Tensor
                           ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`predict` and the probability (B, K) that each input keypoint is a gross
        error (None without an error head); no grad."""
        logits, error_logits = self(images, input_pose, with_error=True)
        coords, conf = self.decode(logits)
        prob = None if error_logits is None else torch.sigmoid(error_logits.float())
        return coords, conf, prob

    @torch.no_grad()
    def input_error(self, images: Tensor, input_pose: Tensor) -> Tensor:
        """Probability (B, K) that each input keypoint is a gross error (needs the head)."""
        if self.error_head is None:
            raise ValueError("this network has no error head (model.error_head: false)")
        return torch.sigmoid(self(images, input_pose, with_error=True)[1].float())


def build_model(cfg: ModelConfig, num_keypoints: int) -> PoseFixNet:
    """The PoseFix network of a model config for ``num_keypoints`` keypoints. Its decoding
    is :meth:`posefix.decoding.Decoding.from_model_config`'s."""
    return PoseFixNet(cfg, num_keypoints)


