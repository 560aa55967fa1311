"""Fixing input keypoints by the kind of their error (posefix.fixes)."""

from __future__ import annotations

import numpy as np
import pytest

from posefix.decoding import Decoding
from posefix.fixes import FixOptions, fix_keypoints
from posefix.spec import load_spec
from posefix.taxonomy import GOOD, INVERSION, MISS, SWAP

SPEC = load_spec("coco17")
K = SPEC.num_keypoints
LK, RK = SPEC.index("left_knee"), SPEC.index("right_knee")
LA, RA = SPEC.index("left_ankle"), SPEC.index("right_ankle")
LW = SPEC.index("left_wrist")


def person(dx: float = 0.0) -> np.ndarray:
    """A (K, 3) input pose: keypoint i at (dx + 10 i, 5 i), every one present."""
    i = np.arange(K, dtype=np.float64)
    return np.stack([dx + 10 * i, 5 * i, np.ones(K)], -1)


def kinds_of(n: int, **where: tuple[int, int, int, float]) -> np.ndarray:
    """(n, K, 5) probabilities: good everywhere, except ``name=(det, kp, kind, p)``."""
    out = np.zeros((n, K, 5))
    out[..., GOOD] = 1.0
    for det, kp, kind, p in where.values():
        out[det, kp] = 0.0
        out[det, kp, GOOD] = 1 - p
        out[det, kp, kind] = p
    return out


def run(inputs, refined, kinds, opts, areas=None):
    areas = np.full(len(inputs), 1e4) if areas is None else areas
    return fix_keypoints(inputs, refined, kinds, areas, SPEC, opts)


def test_good_keypoints_keep_the_input_exactly():
    inp = person()[None]
    refined = inp[..., :2] + 3.0
    r = run(inp, refined, kinds_of(1), FixOptions(gate=0.3))
    np.testing.assert_array_equal(r.coords, inp[..., :2])
    assert not r.action.any()


def test_an_inverted_pair_takes_each_others_input_positions():
    inp = person()[None]
    refined = inp[..., :2] + 3.0
    kinds = kinds_of(1, a=(0, LK, INVERSION, 0.9), b=(0, RK, INVERSION, 0.8))
    for mode in ("keypoint", "pair", "group"):
        r = run(inp, refined, kinds, FixOptions(gate=0.3, inversion=mode))
        np.testing.assert_array_equal(r.coords[0, LK], inp[0, RK, :2])
        np.testing.assert_array_equal(r.coords[0, RK], inp[0, LK, :2])
        assert r.action[0, LK] == r.action[0, RK] == INVERSION
        np.testing.assert_array_equal(r.coords[0, LA], inp[0, LA, :2])  # untouched


def test_decisions_per_keypoint_pair_and_group_differ():
    inp = person()[None]
    refined = inp[..., :2] + 3.0
    # one knee sure, its partner not: per keypoint nothing is exchanged (the lone
    # inversion becomes a miss: the refined keypoint); per pair the mean 0.5 suffices
    kinds = kinds_of(1, a=(0, LK, INVERSION, 0.9), b=(0, RK, INVERSION, 0.1))
    r = run(inp, refined, kinds, FixOptions(inversion="keypoint", gate=0.3))
    np.testing.assert_array_equal(r.coords[0, LK], refined[0, LK])
    assert r.action[0, LK] == MISS and r.action[0, RK] == 0
    r = run(inp, refined, kinds, FixOptions(inversion="pair", gate=0.3))
    np.testing.assert_array_equal(r.coords[0, LK], inp[0, RK, :2])
    # per body group: the lower body's present pairs (knees 0.9, ankles 0.4; hips absent)
    # average 0.65 >= 0.5, so the ankles are exchanged with the knees; per pair they are not
    inp[0, [SPEC.index("left_hip"), SPEC.index("right_hip")], 2] = 0
    kinds = kinds_of(1, a=(0, LK, INVERSION, 0.9), b=(0, RK, INVERSION, 0.9),
                     c=(0, LA, INVERSION, 0.4), d=(0, RA, INVERSION, 0.4))
    r = run(inp, refined, kinds, FixOptions(inversion="group", gate=0.5))
    np.testing.assert_array_equal(r.coords[0, LA], inp[0, RA, :2])
    np.testing.assert_array_equal(r.coords[0, LK], inp[0, RK, :2])
    r = run(inp, refined, kinds, FixOptions(inversion="pair", gate=0.5))
    np.testing.assert_array_equal(r.coords[0, LK], inp[0, RK, :2])
    np.testing.assert_array_equal(r.coords[0, LA], inp[0, LA, :2])  # P(gross) 0.4 < 0.5
    r = run(inp, refined, kinds, FixOptions(inversion="pair", gate=0.3, inversion_gate=0.5))
    assert r.action[0, LA] == MISS  # touched (P(gross) >= 0.3), not exchanged: refined


def test_a_swap_takes_the_other_detections_same_joint_input():
    # a's wrist is a swap; the network puts it near the wrist of detection c, whose input
    # is exact: a's wrist takes c's input position
    a, b, c = person(), person(dx=400.0), person(dx=800.0)
    inp = np.stack([a, b, c])
    refined = inp[..., :2].copy()
    refined[0, LW] = c[LW, :2] + [2.0, -1.0]
    kinds = kinds_of(3, a=(0, LW, SWAP, 0.9))
    r = run(inp, refined, kinds, FixOptions(gate=0.3, swap_ks=0.5))
    np.testing.assert_array_equal(r.coords[0, LW], c[LW, :2])
    assert r.action[0, LW] == SWAP
    # nothing within KS 0.5: the refined keypoint
    refined[0, LW] = [-500.0, -500.0]
    r = run(inp, refined, kinds, FixOptions(gate=0.3, swap_ks=0.5))
    np.testing.assert_array_equal(r.coords[0, LW], refined[0, LW])
    assert r.action[0, LW] == MISS
    # swaps off: the refined keypoint too
    refined[0, LW] = c[LW, :2] + [2.0, -1.0]
    r = run(inp, refined, kinds, FixOptions(gate=0.3, swap_ks=0.0))
    np.testing.assert_array_equal(r.coords[0, LW], refined[0, LW])


def test_a_miss_takes_the_refined_keypoint_or_snaps_to_a_near_input():
    inp = np.stack([person(), person(dx=400.0)])
    refined = inp[..., :2].copy()
    refined[0, LW] = inp[1, LW, :2] + [1.5, 0.5]
    kinds = kinds_of(2, a=(0, LW, MISS, 0.7))
    r = run(inp, refined, kinds, FixOptions(gate=0.3, snap=0.0))
    np.testing.assert_array_equal(r.coords[0, LW], refined[0, LW])
    assert not r.snapped.any()
    r = run(inp, refined, kinds, FixOptions(gate=0.3, snap=0.5))
    np.testing.assert_array_equal(r.coords[0, LW], inp[1, LW, :2])
    assert r.snapped[0, LW] and r.snapped.sum() == 1


def test_absent_inputs_take_the_refined_keypoint_and_below_the_gate_nothing_moves():
    inp = person()[None].copy()
    inp[0, LK, 2] = 0
    refined = inp[..., :2] + 3.0
    kinds = kinds_of(1, a=(0, RK, MISS, 0.29))
    r = run(inp, refined, kinds, FixOptions(gate=0.3))
    np.testing.assert_array_equal(r.coords[0, LK], refined[0, LK])
    np.testing.assert_array_equal(r.coords[0, RK], inp[0, RK, :2])


def test_the_gate_is_the_networks_unless_set_and_none_refines_everything():
    assert FixOptions().resolve(0.4).gate == 0.4
    assert FixOptions(gate=0.2).resolve(0.4).gate == 0.2
    every = FixOptions(inversion="group", snap=0.5).resolve(None)
    assert (every.gate, every.inversion, every.swap_ks, every.snap) == (0.0, "off", 0.0, 0.0)
    with pytest.raises(ValueError, match="resolve"):
        run(person()[None], person()[None, :, :2], kinds_of(1), FixOptions())


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="inversion"):
        FixOptions(inversion="limb")
    with pytest.raises(ValueError, match="gate"):
        FixOptions(gate=1.5)


def kind_network(inverted: tuple[int, int], shift: float = 3.0):
    """A 'network' with a kind head: keypoints ``shift`` crop px right of the input; the
    ``inverted`` keypoint pair labelled inversion (P 0.9), every other keypoint good."""
    def predict(images, pose):
        import torch

        coords = pose[..., :2].clone()
        coords[..., 0] += shift
        kinds = torch.zeros((*pose.shape[:2], 5))
        kinds[..., GOOD] = 1.0
        kinds[:, list(inverted)] = torch.tensor([0.1, 0.0, 0.9, 0.0, 0.0])
        return coords, torch.ones(pose.shape[:2]), kinds[..., 2:].sum(-1), kinds
    predict.decoding = Decoding(gate=0.3)
    return predict


@pytest.mark.parametrize("flip", [False, True])
def test_refine_exchanges_an_inverted_pair_exactly_through_the_pipeline(flip):
    from posefix.io import Detections
    from posefix.options import RefineOptions
    from posefix.refine import refine

    rng = np.random.default_rng(0)
    kp = np.zeros((2, K, 3))
    kp[..., 0] = rng.uniform(20, 180, (2, K))
    kp[..., 1] = rng.uniform(20, 130, (2, K))
    kp[..., 2] = 1.0
    dets = Detections(np.array([4, 4]), kp, np.array([0.9, 0.8]), np.full((2, 4), np.nan),
                      np.ones(2, dtype=np.int64))
    img = np.zeros((150, 200, 3), np.uint8)
    for fix in (FixOptions(inversion="pair"), FixOptions(inversion="keypoint"),
                FixOptions(gate=0.5, inversion="group", swap_ks=0.5)):
        opts = RefineOptions(flip=flip, nms=0, workers=0, score="input", fix=fix)
        out = refine(dets, lambda i: img, kind_network((LK, RK)), SPEC, opts,
                     input_size=(64, 48))
        np.testing.assert_array_equal(out.keypoints[:, LK, :2], kp[:, RK, :2])
        np.testing.assert_array_equal(out.keypoints[:, RK, :2], kp[:, LK, :2])
        keep = np.setdiff1d(np.arange(K), [LK, RK])
        np.testing.assert_array_equal(out.keypoints[:, keep, :2], kp[:, keep, :2])
    # by default (inversions as misses) the pair takes the network's (shifted) keypoints
    # (the flip test would average the shift away)
    out = refine(dets, lambda i: img, kind_network((LK, RK)), SPEC,
                 RefineOptions(flip=False, nms=0, workers=0, score="input"), input_size=(64, 48))
    assert np.all(out.keypoints[:, [LK, RK], 0] - kp[:, [LK, RK], 0] > 1.0)
    np.testing.assert_array_equal(out.keypoints[:, keep, :2], kp[:, keep, :2])
    # refined in place (posefix refine without --gt): the fixes still read the inputs
    from posefix.refine import refine_detections
    mine = Detections(*(a.copy() for a in vars(dets).values()))
    opts = RefineOptions(flip=flip, nms=0, workers=0, score="input",
                         fix=FixOptions(inversion="pair"))
    got, _ = refine_detections(mine, lambda i: img, kind_network((LK, RK)), SPEC, opts,
                               input_size=(64, 48), inplace=True)
    assert np.shares_memory(got.keypoints, mine.keypoints)
    np.testing.assert_array_equal(got.keypoints[:, LK, :2], kp[:, RK, :2])
    np.testing.assert_array_equal(got.keypoints[:, RK, :2], kp[:, LK, :2])
    # without a gate every keypoint takes the network's (shifted) position
    net = kind_network((LK, RK))
    net.decoding = Decoding()
    opts = RefineOptions(flip=False, nms=0, workers=0, score="input")
    out = refine(dets, lambda i: img, net, SPEC, opts, input_size=(64, 48))
    assert np.all(out.keypoints[..., 0] - kp[..., 0] > 1.0)


@pytest.mark.parametrize("what", ["swap", "snap"])
def test_swap_and_snap_reach_exactly_their_ks_of_the_moving_detections_area(what: str):
    # The candidate lies just inside, then just outside, the distance at which the KS
    # (COCO's, with the wrist's sigma and the *moving* detection's area) equals the
    # threshold: taken, then not. Detection 1's area is 9x larger, so a KS scaled by the
    # candidate's area would take both.
    from posefix.similarity import ks_distance

    areas = np.array([1e4, 9e4])
    inp = np.stack([person(), person(dx=400.0)])
    kinds = kinds_of(2, a=(0, LW, SWAP if what == "swap" else MISS, 0.9))
    opts = FixOptions(gate=0.3, swap_ks=0.5) if what == "swap" else \
        FixOptions(gate=0.3, snap=0.5)
    reach = float(ks_distance(0.5, areas[0], SPEC.sigma_array)[LW])
    for scale, taken in ((0.999, True), (1.001, False)):
        refined = inp[..., :2].copy()
        refined[0, LW] = inp[1, LW, :2] - [scale * reach, 0.0]  # away from its partner
        r = run(inp, refined, kinds, opts, areas=areas)
        want = inp[1, LW, :2] if taken else refined[0, LW]
        np.testing.assert_array_equal(r.coords[0, LW], want)
        assert (r.action[0, LW] == SWAP) == (taken and what == "swap")
        assert r.snapped[0, LW] == (taken and what == "snap")
