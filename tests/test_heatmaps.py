"""Heatmap rendering, soft-argmax, bilinear targets and the pixel <-> cell mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posefix.heatmaps import (
    bilinear_onehot,
    default_input_sigma,
    heatmap_confidence,
    heatmap_to_pixels,
    local_soft_argmax,
    log_gaussian_prior,
    pixels_to_heatmap,
    render_gaussians,
    soft_argmax,
)


def _points(xy: list[tuple[float, float]], valid: list[float] | None = None) -> torch.Tensor:
    v = valid if valid is not None else [1.0] * len(xy)
    return torch.tensor([[[x, y, f] for (x, y), f in zip(xy, v, strict=True)]])


def test_render_peak_at_integer_point_and_matches_formula() -> None:
    pts = torch.tensor([[[10.0, 20.0, 1.0], [3.25, 40.5, 2.0]],
                        [[47.0, 0.0, 1.0], [30.7, 11.1, 1.0]]])
    sigma = 2.5
    hm = render_gaussians(pts, 64, 48, sigma)
    assert hm.shape == (2, 2, 64, 48) and hm.dtype == torch.float32
    assert hm[0, 0].max() == pytest.approx(1.0)
    assert divmod(int(hm[0, 0].argmax()), 48) == (20, 10)  # (row y, column x)
    assert divmod(int(hm[1, 0].argmax()), 48) == (0, 47)
    yy, xx = np.mgrid[0:64, 0:48]
    for b in range(2):
        for k in range(2):
            x, y = pts[b, k, :2].tolist()
            ref = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
            np.testing.assert_allclose(hm[b, k].numpy(), ref, atol=1e-6)


def test_render_zero_for_absent_keypoints() -> None:
    hm = render_gaussians(_points([(5.0, 5.0), (20.0, 30.0), (7.0, 9.0)], [1.0, 0.0, 0.0]),
                          64, 48, 3.0)
    assert hm[0, 0].max() == pytest.approx(1.0)
    assert torch.count_nonzero(hm[0, 1:]) == 0


def test_render_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, 3\)"):
        render_gaussians(torch.zeros(2, 5, 2), 8, 8, 1.0)


def test_default_input_sigma_follows_reference_settings() -> None:
    assert default_input_sigma((256, 192)) == pytest.approx(7.0)
    assert default_input_sigma((384, 288)) == pytest.approx(9.0)
    assert default_input_sigma((256, 192), 5.0) == pytest.approx(5.0)
    assert default_input_sigma((384, 288), 14.0) == pytest.approx(18.0)
    small = default_input_sigma((64, 48))
    assert 0 < small < 7.0
    with pytest.raises(ValueError):
        default_input_sigma((0, 48))


@pytest.mark.parametrize("xy", [(3.0, 5.0), (3.3, 5.8), (0.5, 14.25), (10.9, 0.1)])
def test_soft_argmax_recovers_sharp_subcell_peak(xy: tuple[float, float]) -> None:
    target = torch.tensor([[list(xy)]])
    logits = torch.log(bilinear_onehot(target, 16, 12) + 1e-12).reshape(1, 1, 16, 12)
    got = soft_argmax(logits)
    assert got.shape == (1, 1, 2)
    torch.testing.assert_close(got, target, atol=1e-4, rtol=0)


def test_soft_argmax_of_symmetric_gaussian_is_its_centre() -> None:
    cx, cy = 15.37, 16.81
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(30.0), indexing="ij")
    logits = -((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5**2)
    got = soft_argmax(logits[None, None].repeat(2, 3, 1, 1))
    assert got.shape == (2, 3, 2)
    torch.testing.assert_close(got, torch.tensor([cx, cy]).expand(2, 3, 2), atol=1e-3, rtol=0)


def test_bilinear_onehot_sums_to_one_and_expectation_is_target() -> None:
    gen = torch.Generator().manual_seed(0)
    h, w = 16, 12
    coords = torch.rand(4, 5, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
    t = bilinear_onehot(coords, h, w)
    assert t.shape == (4, 5, h * w)
    assert (t >= 0).all()
    torch.testing.assert_close(t.sum(-1), torch.ones(4, 5))
    assert ((t > 0).sum(-1) <= 4).all()
    grid = t.reshape(4, 5, h, w)
    ex = (grid.sum(2) * torch.arange(float(w))).sum(-1)
    ey = (grid.sum(3) * torch.arange(float(h))).sum(-1)
    torch.testing.assert_close(torch.stack([ex, ey], -1), coords, atol=1e-5, rtol=0)


def test_bilinear_onehot_weights_and_clamping() -> None:
    t = bilinear_onehot(torch.tensor([[[1.25, 2.5], [-3.0, 40.0]]]), 4, 3).reshape(2, 4, 3)
    # x = 1.25 -> columns 1 and 2 with 0.75 / 0.25; y = 2.5 -> rows 2 and 3 with 0.5 each.
    expected = torch.zeros(4, 3)
    expected[2, 1] = expected[3, 1] = 0.375
    expected[2, 2] = expected[3, 2] = 0.125
    torch.testing.assert_close(t[0], expected)
    # Out of the map: clamped onto the corner cell (x=0, y=h-1).
    assert t[1, 3, 0] == pytest.approx(1.0) and t[1].sum() == pytest.approx(1.0)


def test_heatmap_confidence_sharp_vs_flat() -> None:
    sharp = torch.log(bilinear_onehot(torch.tensor([[[4.5, 6.5]]]), 16, 12) + 1e-12)
    conf = heatmap_confidence(sharp.reshape(1, 1, 16, 12))
    assert conf.shape == (1, 1) and conf.item() == pytest.approx(1.0, abs=1e-6)
    flat = heatmap_confidence(torch.zeros(2, 3, 16, 12))
    torch.testing.assert_close(flat, torch.full((2, 3), 9 / (16 * 12)))
    spread = heatmap_confidence(torch.randn(1, 1, 16, 12, generator=torch.Generator().manual_seed(1)))
    assert 0 < spread.item() < 0.5


def test_pixel_cell_mapping_round_trip_and_centres() -> None:
    px = torch.tensor([[[1.5, 1.5], [0.0, 10.0], [-0.5, 191.5]]])
    cells = pixels_to_heatmap(px, 4)
    # The centre of cell 0 is the centre of pixels 0..3, i.e. pixel 1.5; pixel -0.5 is the
    # left edge of the map, i.e. cell -0.5.
    torch.testing.assert_close(cells[0, 0], torch.tensor([0.0, 0.0]))
    assert cells[0, 2, 0].item() == pytest.approx(-0.5)
    assert cells[0, 2, 1].item() == pytest.approx(47.5)
    torch.testing.assert_close(heatmap_to_pixels(cells, 4), px)
    s = (4.0, 2.0)
    torch.testing.assert_close(heatmap_to_pixels(pixels_to_heatmap(px, s), s), px)
    assert pixels_to_heatmap(px, s)[0, 0, 1].item() == pytest.approx(0.5)


def test_pixel_cell_mapping_commutes_with_flip() -> None:
    width, stride = 48, 4
    w = width // stride
    px = torch.tensor([[[0.0, 3.0], [17.3, 5.0], [47.0, 1.0]]])
    flipped_px = px.clone()
    flipped_px[..., 0] = width - 1 - px[..., 0]
    cells = pixels_to_heatmap(px, stride)
    flipped_cells = cells.clone()
    flipped_cells[..., 0] = w - 1 - cells[..., 0]
    torch.testing.assert_close(pixels_to_heatmap(flipped_px, stride), flipped_cells)


def test_render_is_batched_on_device_dtype() -> None:
    pts = torch.tensor([[[2.0, 2.0, 1.0]]], dtype=torch.float64)
    hm = render_gaussians(pts, 5, 5, 1.0)
    assert hm.dtype == torch.float64 and hm.device == pts.device
    assert hm[0, 0, 2, 3].item() == pytest.approx(math.exp(-0.5))


def test_log_gaussian_prior_decodes_to_its_keypoint_with_a_low_floor() -> None:
    pts = torch.tensor([[[7.3, 9.8, 1.0], [3.0, 4.5, 1.0], [12.6, 2.4, 1.0], [5.0, 5.0, 0.0]]])
    h, w = 24, 18
    prior = log_gaussian_prior(pts, h, w, sigma=1.25)
    assert prior.shape == (1, 4, h, w)
    # A softmax of the prior is the sampled Gaussian: soft-argmax returns the keypoint, unlike
    # a Gaussian bump added to zero logits, which leaks mass towards the map's centre.
    err = (soft_argmax(prior)[0, :3] - pts[0, :3, :2]).abs()
    assert err[0].max() < 1e-4, err  # 6 sigma from every border
    assert err.max() < 0.05, err  # 2 sigma from a border: the truncated tail pulls inwards
    bump = soft_argmax(10.0 * render_gaussians(pts, h, w, 1.25))[0, :3]
    assert (bump - pts[0, :3, :2]).abs().max() > 0.05
    # Peak 0 at the keypoint, a floor of log(h * w) + 10 far away, flat for a missing one.
    assert prior[0, 0].max() <= 0 and prior[0, 0].max() > -0.2
    assert math.isclose(float(prior[0, 0].min()), -(math.log(h * w) + 10.0), rel_tol=1e-4)
    assert torch.count_nonzero(prior[0, 3]) == 0
    with pytest.raises(ValueError, match="shape"):
        log_gaussian_prior(pts[0], h, w, 1.0)


def test_local_soft_argmax_decodes_the_main_mode_only() -> None:
    h, w = 20, 16
    main = log_gaussian_prior(torch.tensor([[[4.3, 5.6, 1.0]]]), h, w, sigma=1.0)
    second = log_gaussian_prior(torch.tensor([[[12.0, 16.0, 1.0]]]), h, w, sigma=1.0)
    logits = torch.logaddexp(main, second + math.log(0.25))  # 80% / 20% mixture
    glob = soft_argmax(logits)[0, 0]
    local = local_soft_argmax(logits, radius=3)[0, 0]
    assert (glob - torch.tensor([4.3, 5.6])).abs().max() > 1.0  # dragged towards the second
    assert (local - torch.tensor([4.3, 5.6])).abs().max() < 0.01, local
    # Unimodal maps decode as with the global soft-argmax (radius 3 sigma).
    np.testing.assert_allclose(local_soft_argmax(main, 3), soft_argmax(main), atol=3e-3)
    with pytest.raises(ValueError, match="radius"):
        local_soft_argmax(logits, 0)
