"""Integral loss: cross-entropy against the bilinear target plus coordinate L1, masked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from posefix import heatmaps
from posefix.heatmaps import bilinear_onehot, heatmap_to_pixels, pixels_to_heatmap, soft_argmax
from posefix.loss import integral_loss

H, W = 16, 12


def _peak_logits(coords: torch.Tensor, sharpness: float = 1.0) -> torch.Tensor:
    b, k, _ = coords.shape
    return sharpness * torch.log(bilinear_onehot(coords, H, W) + 1e-12).reshape(b, k, H, W)


def test_loss_near_zero_for_sharp_peak_at_cell_centre_target() -> None:
    target = torch.tensor([[[3.0, 4.0], [0.0, 15.0]], [[11.0, 0.0], [6.0, 7.0]]])
    out = integral_loss(_peak_logits(target), target, torch.ones(2, 2))
    assert set(out) == {"loss", "ce", "l1"}
    assert out["loss"].item() < 1e-4
    assert out["ce"].item() < 1e-4 and out["l1"].item() < 1e-4
    # The same target under a flat heatmap costs log(h*w) plus a real coordinate error.
    flat = integral_loss(torch.zeros(2, 2, H, W), target, torch.ones(2, 2))
    assert flat["ce"].item() == pytest.approx(math.log(H * W), rel=1e-5)
    assert flat["l1"].item() > 1.0


def test_subcell_target_minimum_is_target_entropy() -> None:
    target = torch.tensor([[[3.5, 4.5]]])  # 4 cells with 1/4 each
    out = integral_loss(_peak_logits(target), target, torch.ones(1, 1))
    assert out["l1"].item() < 1e-4
    assert out["ce"].item() == pytest.approx(math.log(4), abs=1e-4)


def test_loss_matches_manual_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, H, W, generator=gen)
    target = torch.rand(3, 4, 2, generator=gen) * torch.tensor([W - 1.0, H - 1.0])
    valid = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    out = integral_loss(logits, target, valid)
    m = valid.flatten()
    probs = bilinear_onehot(target, H, W).reshape(12, H * W)[m]
    ce = F.cross_entropy(logits.reshape(12, H * W)[m], probs)
    l1 = (soft_argmax(logits) - target).abs().sum(-1).flatten()[m].mean()
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["l1"], l1)
    torch.testing.assert_close(out["loss"], ce + l1)
    w = integral_loss(logits, target, valid, ce_weight=0.0, l1_weight=2.0)
    torch.testing.assert_close(w["loss"], 2 * l1)


def test_loss_is_masked_by_valid() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, H, W, generator=gen, requires_grad=True)
    target = torch.rand(2, 3, 2, generator=gen) * 10
    valid = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    base = integral_loss(logits, target, valid)
    junk = target.clone()
    junk[valid == 0] = float("nan")
    out = integral_loss(logits, junk, valid)
    torch.testing.assert_close(out["loss"], base["loss"])
    out["loss"].backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[valid == 0].abs().max() == 0
    assert grad[valid > 0].abs().max() > 0
    # Only the labelled keypoints count: same as the loss of those keypoints alone.
    sel = valid.flatten() > 0
    alone = integral_loss(logits.detach().reshape(1, 6, H, W)[:, sel],
                          target.reshape(1, 6, 2)[:, sel], torch.ones(1, int(sel.sum())))
    torch.testing.assert_close(base["loss"], alone["loss"])


def test_no_labelled_keypoint_gives_zero_with_graph() -> None:
    logits = torch.randn(1, 2, H, W, requires_grad=True)
    out = integral_loss(logits, torch.zeros(1, 2, 2), torch.zeros(1, 2))
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert logits.grad is not None and logits.grad.abs().max() == 0


def test_gradient_descent_moves_soft_argmax_to_target() -> None:
    logits = torch.zeros(1, 1, H, W, requires_grad=True)
    target = torch.tensor([[[8.25, 3.75]]])
    opt = torch.optim.Adam([logits], lr=0.2)
    first = None
    for _ in range(200):
        opt.zero_grad()
        out = integral_loss(logits, target, torch.ones(1, 1))
        first = first if first is not None else out["loss"].item()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < first / 2
    torch.testing.assert_close(soft_argmax(logits.detach()), target, atol=0.1, rtol=0)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="target"):
        integral_loss(torch.zeros(1, 2, H, W), torch.zeros(1, 3, 2), torch.ones(1, 2))


def test_pixel_helpers_are_the_heatmap_ones() -> None:
    assert pixels_to_heatmap is heatmaps.pixels_to_heatmap
    assert heatmap_to_pixels is heatmaps.heatmap_to_pixels
    px = torch.tensor([[[13.0, 22.0]]])
    torch.testing.assert_close(pixels_to_heatmap(px, 4), torch.tensor([[[2.875, 5.125]]]))
