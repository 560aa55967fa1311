"""Integral loss of PoseFix (paper section 5.2): heatmap cross-entropy + coordinate L1.

Both terms are computed in heatmap cells (see :mod:`posefix.heatmaps` for the mapping
from input pixels, :func:`pixels_to_heatmap`):

* ``ce``: softmax cross-entropy of each whole heatmap against :func:`bilinear_onehot` of
  the target (the target's unit mass spread over its 4 neighbouring cells). Its minimum is
  the entropy of that target (0 when the target sits on a cell centre, at most ``log 4``).
* ``l1``: ``|x - x*| + |y - y*|`` between the soft-argmax of the heatmap and the target.

Targets outside the map are clamped onto its border for both terms.

Each is averaged over the labelled keypoints (``valid > 0``) of the batch, and
``loss = ce_weight * ce + l1_weight * l1`` (the paper sums them: both weights 1).

:func:`error_head_loss` is the error head's: binary cross-entropy against the synthesized
error types of the input keypoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .heatmaps import bilinear_onehot, soft_argmax
from .taxonomy import ABSENT, GROSS

__all__ = ["error_head_loss", "integral_loss"]


def integral_loss(
    logits: Tensor, target: Tensor, valid: Tensor, *, ce_weight: float = 1.0,
    l1_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Integral loss of heatmap logits against target coordinates.

    Args:
        logits: (B, K, h, w) heatmap logits.
        target: (B, K, 2) ``x, y`` in heatmap cells.
        valid: (B, K) mask (bool or 0/1) of labelled keypoints; others do not count.
        ce_weight, l1_weight: weights of the two terms in ``loss``.

    Returns:
        dict of scalar tensors ``loss``, ``ce`` and ``l1`` (zero when nothing is labelled,
        still connected to the graph).
    """
    b, k, h, w = logits.shape
    if target.shape != (b, k, 2) or valid.shape != (b, k):
        raise ValueError(f"target must be ({b}, {k}, 2) and valid ({b}, {k}); got "
                         f"{tuple(target.shape)} and {tuple(valid.shape)}")
    flat = logits.reshape(b, k, h * w).float()
    mask = (valid > 0).float()
    count = mask.sum().clamp_min(1.0)
    # Unlabelled rows may hold anything (even NaN): zero them so no NaN reaches a gradient.
    tgt = torch.where(mask.unsqueeze(-1) > 0, target.float(), torch.zeros((), device=logits.device))
    tgt = torch.stack([tgt[..., 0].clamp(0, w - 1), tgt[..., 1].clamp(0, h - 1)], dim=-1)
    onehot = bilinear_onehot(tgt, h, w)
    ce = -(onehot * torch.log_softmax(flat, dim=-1)).sum(-1)
    l1 = (soft_argmax(logits) - tgt).abs().sum(-1)
    ce = (ce * mask).sum() / count
    l1 = (l1 * mask).sum() / count
    return {"loss": ce_weight * ce + l1_weight * l1, "ce": ce, "l1": l1}


def error_head_loss(error_logits: Tensor, types: Tensor, input_valid: Tensor) -> Tensor:
    """Binary cross-entropy of the error head's logits (B, K) against synthesized error
    types.

    ``types`` (B, K) are :mod:`posefix.taxonomy` codes; a keypoint counts where the input is
    present and its type is known (not ``ABSENT``), and is positive where the type is
    inversion, swap or miss.
    """
    t = types.to(error_logits.device).long()
    mask = (input_valid.to(error_logits.device) > 0) & (t != ABSENT)
    positive = torch.isin(t, torch.tensor(GROSS, device=t.device)).float()
    bce = F.binary_cross_entropy_with_logits(error_logits.float(), positive, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp_min(1)
