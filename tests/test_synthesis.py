"""Input-pose synthesis: types match positions, frequencies match the profile, the loop
through diagnosis and profile fitting closes, neighbours and estimates are found right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import posefix.synthesis as synthesis_module
from posefix.commands.synthesize import synthesize_file
from posefix.geometry import box_iou
from posefix.io import Detections, GroundTruth, ImageInfo, load_ground_truth, load_results
from posefix.profile import ErrorProfile, fit_profile, load_profile
from posefix.similarity import keypoint_similarity, ks_distance
from posefix.spec import KeypointSpec, load_spec
from posefix.synthesis import (
    estimates_for,
    overlap_index,
    overlapping_persons,
    synthesize,
)
from posefix.taxonomy import ABSENT, ERROR_TYPES, GOOD, INVERSION, JITTER, MISS, SWAP


# --------------------------------------------------------------------------- helpers
def argmax_classify(poses: np.ndarray, kp: np.ndarray, areas: np.ndarray, others: np.ndarray,
                    others_areas: np.ndarray, spec: KeypointSpec) -> np.ndarray:
    """coco-analyze's rule, written independently: the candidate (own keypoint, own
    partner, other persons' same and partner keypoints, each with its person's area) of
    highest KS decides the type; KS < 0.5 with all of them is a miss."""
    N, K = kp.shape[:2]
    sig = spec.sigma_array
    has_p = spec.partner_index >= 0
    pj = np.where(has_p, spec.partner_index, np.arange(K))
    lab = kp[..., 2] > 0
    cands = [
        np.where(lab, keypoint_similarity(poses, kp, areas, sig), -1),
        np.where(lab[:, pj] & has_p, keypoint_similarity(poses, kp[:, pj], areas, sig), -1),
    ]
    for m in range(others.shape[1]):
        o, a = others[:, m], others_areas[:, m]
        cands.append(np.where(o[..., 2] > 0, keypoint_similarity(poses, o, a, sig), -1))
        cands.append(np.where((o[:, pj, 2] > 0) & has_p,
                              keypoint_similarity(poses, o[:, pj], a, sig), -1))
    ks = np.stack(cands)  # S, N, K
    best, arg = ks.max(0), ks.argmax(0)
    out = np.select([best < 0.5, arg >= 2, arg == 1, best >= 0.85], [MISS, SWAP, INVERSION, GOOD],
                    default=JITTER)
    return np.where(lab & (poses[..., 2] > 0), out, ABSENT)


def crowd_of_copies(gt: GroundTruth, copies: int, seed: int = 0) -> GroundTruth:
    """A larger ground truth made of the real persons: each image holds one real person
    (a random share of its labels dropped, so every labelled-count bin is reached) and
    0-3 shifted copies of it standing close by (so swaps have sources)."""
    rng = np.random.default_rng(seed)
    base = np.flatnonzero(gt.num_labelled > 0)
    kps, boxes, areas, img = [], [], [], []
    for i in range(copies):
        b = base[i % len(base)]
        n_near = i % 4
        keep = rng.random() * 0.9 + 0.1
        for c in range(1 + n_near):
            kp = gt.keypoints[b].copy()
            box = gt.boxes[b].copy()
            if c:
                shift = (rng.random(2) - 0.5) * box[2:] * 0.8
                kp[:, :2] += shift
                box[:2] += shift
            drop = rng.random(len(kp)) > keep
            kp[drop] = 0.0
            if not (kp[:, 2] > 0).any():
                kp[gt.keypoints[b, :, 2].argmax()] = gt.keypoints[b, gt.keypoints[b, :, 2].argmax()]
            kps.append(kp)
            boxes.append(box)
            areas.append(gt.areas[b])
            img.append(i + 1)
    n = len(kps)
    return GroundTruth(
        spec=gt.spec,
        images={i + 1: ImageInfo(i + 1, f"{i + 1}.jpg", 640, 480) for i in range(copies)},
        image_ids=np.asarray(img), ann_ids=np.arange(1, n + 1), keypoints=np.stack(kps),
        boxes=np.stack(boxes), areas=np.asarray(areas), iscrowd=np.zeros(n, dtype=bool),
    )


def synthesize_gt(gt: GroundTruth, profile: ErrorProfile | str = "default", seed: int = 0,
                  use_areas: bool = True) -> tuple[np.ndarray, ...]:
    idx = overlap_index(gt)
    others = overlapping_persons(gt)
    oa = gt.areas[np.maximum(idx, 0)]
    poses, types = synthesize(gt.keypoints, gt.areas, gt.spec, profile,
                              np.random.default_rng(seed), others=others,
                              others_areas=oa if use_areas else None)
    return poses, types, others, oa if use_areas else np.broadcast_to(gt.areas[:, None],
                                                                     idx.shape)


def availability(gt: GroundTruth, others: np.ndarray) -> np.ndarray:
    """(N, K, 5) which types synthesis can make: inversion needs a labelled partner, swap
    an overlapping person with the same or partner keypoint labelled."""
    spec = gt.spec
    K = spec.num_keypoints
    has_p = spec.partner_index >= 0
    pj = np.where(has_p, spec.partner_index, np.arange(K))
    lab = gt.keypoints[..., 2] > 0
    olab = others[..., 2] > 0
    avail = np.ones((len(gt), K, 5), dtype=bool)
    avail[..., INVERSION] = lab[:, pj] & has_p
    avail[..., SWAP] = (olab | (olab[:, :, pj] & has_p)).any(1)
    return avail


@pytest.fixture(scope="module")
def coco_gt(coco_dir: Path) -> GroundTruth:
    return load_ground_truth(coco_dir / "test_coco.json")


@pytest.fixture(scope="module")
def crowd(coco_gt: GroundTruth) -> GroundTruth:
    return crowd_of_copies(coco_gt, 3000)


# --------------------------------------------------------------------------- tests
def test_shapes_seed_and_reproducibility(coco_gt: GroundTruth) -> None:
    others = overlapping_persons(coco_gt)
    a = synthesize(coco_gt.keypoints, coco_gt.areas, coco_gt.spec, "default",
                   np.random.default_rng(5), others=others)
    b = synthesize(coco_gt.keypoints, coco_gt.areas, coco_gt.spec, "default",
                   np.random.default_rng(5), others=others)
    c = synthesize(coco_gt.keypoints, coco_gt.areas, coco_gt.spec, "default",
                   np.random.default_rng(6), others=others)
    poses, types = a
    assert poses.shape == coco_gt.keypoints.shape and types.shape == poses.shape[:2]
    assert types.dtype == np.int8
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    lab = coco_gt.keypoints[..., 2] > 0
    # Every labelled keypoint got a type and a position; nothing else did.
    assert np.all((types != ABSENT) == (poses[..., 2] > 0))
    assert np.all(types[~lab] == ABSENT) and np.all(poses[~lab] == 0)
    assert (types[lab] != ABSENT).mean() > 0.99
    assert set(np.unique(poses[..., 2])) <= {0.0, 1.0}


def test_types_are_what_their_positions_say(crowd: GroundTruth) -> None:
    for use_areas in (True, False):
        poses, types, others, oa = synthesize_gt(crowd, use_areas=use_areas)
        got = argmax_classify(poses, crowd.keypoints, crowd.areas, others, oa, crowd.spec)
        assert np.array_equal(got, types), (got != types).sum()
        counts = np.bincount(types[types >= 0], minlength=5)
        assert np.all(counts > 300), counts  # every type is exercised


def test_radii_follow_the_ks_bands(crowd: GroundTruth) -> None:
    poses, types, _, _ = synthesize_gt(crowd, seed=3)
    d = np.linalg.norm(poses[..., :2] - crowd.keypoints[..., :2], axis=-1)
    sig = crowd.spec.sigma_array
    d85, d50, d10 = (ks_distance(k, crowd.areas, sig) for k in (0.85, 0.5, 0.1))
    assert np.all(d[types == GOOD] < d85[types == GOOD])
    j = types == JITTER
    assert np.all((d[j] >= d85[j] * (1 - 1e-9)) & (d[j] < d50[j]))
    for t in (INVERSION, SWAP, MISS):  # off its own ground truth
        assert np.all(d[types == t] >= d50[types == t] * (1 - 1e-9))
    m = types == MISS
    # Most misses are drawn around the ground truth, so they stay within d_0.1 of it.
    assert (d[m] < d10[m]).mean() > 0.6


def expected_counts(gt: GroundTruth, others: np.ndarray, prof: ErrorProfile,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Expected number and variance of each type per keypoint under drop-and-renormalize."""
    lab = (gt.keypoints[..., 2] > 0) & gt.spec.used_mask
    nl = lab.sum(1)
    no = ((others[..., 2] > 0).any(-1)).sum(1)
    p = prof.probabilities(gt.spec, nl, no) * availability(gt, others)
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-12) * lab[..., None]
    return p.sum(0), (p * (1 - p)).sum(0)


def test_type_frequencies_follow_the_profile(crowd: GroundTruth) -> None:
    prof = load_profile("default")
    poses, types, others, oa = synthesize_gt(crowd, prof, seed=11)
    want, var = expected_counts(crowd, others, prof)  # K, 5
    got = (types[..., None] == np.arange(5)).sum(0)
    # Per keypoint and type: within 5 standard deviations (plus 3 for rare types).
    z = np.abs(got - want) / np.sqrt(var + 1.0)
    assert z.max() < 5, (z.max(), np.unravel_index(z.argmax(), z.shape))
    # Overall rates to within a percent.
    np.testing.assert_allclose(got.sum(0) / got.sum(), want.sum(0) / want.sum(), atol=0.01)
    # A profile of another shape gives other frequencies: the test can see a change.
    flat = load_profile("default")
    rates = np.zeros_like(flat.rates)
    rates[..., GOOD], rates[..., MISS] = 0.5, 0.5
    other = ErrorProfile(name="half-miss", labelled_bins=flat.labelled_bins,
                         overlap_bins=flat.overlap_bins, group_names=flat.group_names,
                         group_keypoints=flat.group_keypoints, rates=rates,
                         fallback=flat.fallback, default_group=flat.default_group)
    _, t2, _, _ = synthesize_gt(crowd, other, seed=11)
    lab = t2 != ABSENT
    assert abs((t2[lab] == MISS).mean() - 0.5) < 0.02
    assert np.isin(t2[lab], [GOOD, MISS]).all()


def test_fit_on_synthesized_poses_gives_back_the_profile(crowd: GroundTruth) -> None:
    prof = load_profile("default")
    poses, types, others, oa = synthesize_gt(crowd, prof, seed=21)
    lab = crowd.keypoints[..., 2] > 0
    nl = lab.sum(1)
    no = (others[..., 2] > 0).any(-1).sum(1)
    swap_ok = availability(crowd, others)[..., SWAP]
    fitted = fit_profile(types, nl, no, crowd.spec, min_count=300, swap_possible=swap_ok)
    check_fit(fitted, prof, types, nl, no, swap_ok, crowd.spec)


def check_fit(fitted: ErrorProfile, prof: ErrorProfile, labels: np.ndarray,
              num_labelled: np.ndarray, num_overlap: np.ndarray, swap_possible: np.ndarray,
              spec: KeypointSpec, min_count: int = 300) -> None:
    """Every well-measured cell within 5 binomial standard errors of the profile, each
    type's error counted on the keypoints where it could occur (a labelled partner for an
    inversion, an overlapping person for a swap)."""
    assert fitted.samples is not None
    well = fitted.samples >= min_count
    assert well.sum() >= 25  # cells of all groups, several labelled and overlap bins
    assert len(np.unique(np.nonzero(well)[1])) >= 3 and len(np.unique(np.nonzero(well)[2])) >= 3
    # Exposure of each type per cell.
    has_p = spec.partner_index >= 0
    pj = np.where(has_p, spec.partner_index, 0)
    lab = labels != ABSENT
    avail = np.ones(labels.shape + (5,), dtype=bool)
    avail[..., INVERSION] = lab[:, pj] & has_p
    avail[..., SWAP] = swap_possible & (num_overlap > 0)[:, None]
    g = np.broadcast_to(prof.group_index(spec), labels.shape)
    lb = np.broadcast_to(prof.labelled_bin(num_labelled)[:, None], labels.shape)
    ob = np.broadcast_to(prof.overlap_bin(num_overlap)[:, None], labels.shape)
    exposure = np.zeros(prof.rates.shape)
    np.add.at(exposure, (g[lab], lb[lab], ob[lab]), avail[lab].astype(float))
    p = prof.rates[well]
    n = exposure[well]
    se = np.sqrt(p * (1 - p) / np.maximum(n, 1))
    z = np.where(n >= 30, np.abs(fitted.rates[well] - p) / (se + 1e-3), 0.0)
    assert z.max() < 5, z.max()
    assert np.abs(fitted.rates[well] - p).mean() < 0.015


def test_closed_loop_through_diagnosis(crowd: GroundTruth) -> None:
    """Synthesized poses, diagnosed as any estimator's would be, show the types synthesis
    recorded, and a profile fitted on that diagnosis gives back the profile."""
    from posefix.diagnosis import classify_keypoints

    prof = load_profile("default")
    poses, types, others, oa = synthesize_gt(crowd, prof, seed=31)
    dets = Detections(image_ids=crowd.image_ids.copy(), keypoints=poses,
                      scores=np.linspace(1.0, 0.5, len(crowd)),
                      boxes=np.full((len(crowd), 4), np.nan),
                      category_ids=np.ones(len(crowd), dtype=np.int64))
    d = classify_keypoints(crowd, dets)
    same = d.gt_index == d.det_index  # detection matched to the person it was made from
    assert same.mean() > 0.95
    labels = d.labels[same]
    ours = types[d.det_index[same]]
    present = ours != ABSENT
    agree = (labels[present] == ours[present]).mean()
    assert agree > 0.999, agree
    fitted = fit_profile(d.labels[same], d.num_labelled[same], d.num_overlap[same], crowd.spec,
                         min_count=300, swap_possible=d.swap_possible[same])
    check_fit(fitted, prof, d.labels[same], d.num_labelled[same], d.num_overlap[same],
              d.swap_possible[same], crowd.spec)


def test_impossible_types_are_dropped(coco_gt: GroundTruth) -> None:
    spec = coco_gt.spec
    base = load_profile("default")

    def only(code: int) -> ErrorProfile:
        rates = np.zeros_like(base.rates)
        rates[..., code] = 1.0
        return ErrorProfile(name=ERROR_TYPES[code], labelled_bins=base.labelled_bins,
                            overlap_bins=base.overlap_bins, group_names=base.group_names,
                            group_keypoints=base.group_keypoints, rates=rates,
                            fallback=base.fallback, default_group=base.default_group)

    kp = coco_gt.keypoints
    # No other person: a swap can never be made, so nothing is synthesized.
    poses, types = synthesize(kp, coco_gt.areas, spec, only(SWAP), 0)
    assert np.all(types == ABSENT) and np.all(poses[..., 2] == 0)
    # Inversions only where the partner is labelled; never for the nose.
    poses, types = synthesize(kp, coco_gt.areas, spec, only(INVERSION), 0)
    has_p = spec.partner_index >= 0
    pj = np.where(has_p, spec.partner_index, 0)
    possible = (kp[..., 2] > 0) & has_p & (kp[:, pj, 2] > 0)
    assert np.all(types[possible] == INVERSION)
    assert (types[~possible] == ABSENT).all()
    # Dropping renormalizes: half swap / half jitter with no neighbours -> all jitter.
    rates = np.zeros_like(base.rates)
    rates[..., SWAP] = rates[..., JITTER] = 0.5
    half = ErrorProfile(name="h", labelled_bins=base.labelled_bins,
                        overlap_bins=base.overlap_bins, group_names=base.group_names,
                        group_keypoints=base.group_keypoints, rates=rates,
                        fallback=base.fallback, default_group=base.default_group)
    _, types = synthesize(kp, coco_gt.areas, spec, half, 0)
    assert np.all(types[kp[..., 2] > 0] == JITTER)


def test_unlabelled_and_ignored_keypoints(coco_gt: GroundTruth) -> None:
    spec = coco_gt.spec
    kp = coco_gt.keypoints
    est = kp.copy()
    est[..., :2] += 1000.0  # far from anything: easy to recognize
    est[..., 2] = 1.0
    est[(kp[..., 2] == 0).sum(1).argmax(), :, 2] = 0.0  # one person has no estimate
    poses, types = synthesize(kp, coco_gt.areas, spec, "default", 0, estimated=est)
    unl = kp[..., 2] == 0
    filled = unl & (est[..., 2] > 0)
    np.testing.assert_array_equal(poses[filled, :2], est[filled, :2])
    assert np.all(poses[filled, 2] == 1) and np.all(types[unl] == ABSENT)
    assert np.all(poses[unl & ~filled] == 0)
    assert filled.sum() > 0 and (unl & ~filled).sum() > 0
    # A spec's ignored keypoints stay absent even if labelled and estimated.
    pt = load_spec("posetrack")
    kp2 = kp.copy()
    kp2[..., 2] = 2.0
    poses, types = synthesize(kp2, coco_gt.areas, pt, "default", 0, estimated=est)
    ig = list(pt.ignore)
    assert np.all(poses[:, ig] == 0) and np.all(types[:, ig] == ABSENT)


def test_chunked_draws_stay_valid(crowd: GroundTruth, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthesis_module, "_CHUNK", 997)
    sub = crowd.subset(np.arange(600))
    poses, types, others, oa = synthesize_gt(sub, seed=2)
    got = argmax_classify(poses, sub.keypoints, sub.areas, others, oa, sub.spec)
    assert np.array_equal(got, types)


def brute_overlaps(gt: GroundTruth, iou: float) -> list[list[int]]:
    out = []
    for r in range(len(gt)):
        same = gt.indices_of_image(int(gt.image_ids[r]))
        ious = box_iou(gt.boxes[r], gt.boxes[same])[0]
        out.append(sorted(int(s) for s, v in zip(same, ious, strict=True)
                          if s != r and v >= iou and not gt.iscrowd[s]
                          and (gt.keypoints[s, :, 2] > 0).any()))
    return out


@pytest.mark.parametrize("folder", ["coco", "crowdpose", "ochuman"])
def test_overlapping_persons_match_brute_force(data_dir: Path, folder: str) -> None:
    path = next(p for p in sorted((data_dir / folder).glob("*.json"))
                if "results" not in p.name and "blazepose" not in p.name
                and "movenet" not in p.name and "_det_" not in p.name)
    gt = load_ground_truth(path)
    for iou in (0.1, 0.0001):
        idx = overlap_index(gt, iou=iou)
        assert [sorted(int(v) for v in row if v >= 0) for row in idx] == brute_overlaps(gt, iou)
    rows = np.array([len(gt) - 1, 0])
    idx = overlap_index(gt, rows, iou=0.0001)
    want = brute_overlaps(gt, 0.0001)
    assert [sorted(int(v) for v in row if v >= 0) for row in idx] == [want[r] for r in rows]
    kps = overlapping_persons(gt, rows, iou=0.0001)
    for i in range(len(rows)):
        real = idx[i][idx[i] >= 0]
        np.testing.assert_array_equal(kps[i, : len(real)], gt.keypoints[real])
        assert np.all(kps[i, len(real):] == 0)
    assert sum(len(w) for w in want) > 0  # the data has overlapping persons


def test_estimates_match_by_box_iou(coco_dir: Path, coco_gt: GroundTruth) -> None:
    dets = load_results(coco_dir / "blazepose_gtboxes.json", coco_gt.spec)
    est = estimates_for(coco_gt, dets)
    boxes = dets.boxes.copy()
    for r in range(len(coco_gt)):
        cand = np.flatnonzero(dets.image_ids == coco_gt.image_ids[r])
        if not len(cand):
            assert np.all(est[r] == 0)
            continue
        b = boxes[cand]
        nan = ~np.isfinite(b).all(1)
        for k in np.flatnonzero(nan):
            xy = dets.keypoints[cand[k], :, :2]
            b[k] = [*xy.min(0), *(xy.max(0) - xy.min(0))]
        ious = box_iou(coco_gt.boxes[r], b)[0]
        if ious.max() >= 0.1:
            np.testing.assert_array_equal(est[r, :, :2], dets.keypoints[cand[ious.argmax()], :, :2])
            assert np.all(est[r, :, 2] == 1)
        else:
            assert np.all(est[r] == 0)
    assert (est[..., 2] > 0).any(1).sum() >= 8


def test_synthesize_file(tmp_path: Path, coco_dir: Path, coco_gt: GroundTruth) -> None:
    out = synthesize_file(coco_dir / "test_coco.json", tmp_path / "synth.json", seed=4,
                          trainset_results=coco_dir / "blazepose_gtboxes.json")
    dets = load_results(out, coco_gt.spec, image_ids=coco_gt.images, strict=True)
    keep = ~coco_gt.iscrowd & (coco_gt.num_labelled > 0)
    assert len(dets) == keep.sum() == 12
    import json

    entries = json.loads(out.read_text())
    rows = np.flatnonzero(keep)
    assert [e["gt_ann_id"] for e in entries] == coco_gt.ann_ids[rows].tolist()
    types = np.array([e["error_types"] for e in entries])
    lab = coco_gt.keypoints[rows, :, 2] > 0
    assert np.all((types != ABSENT) <= lab) and np.all(types[~lab] == ABSENT)
    # Unlabelled keypoints of persons the estimator found carry its positions.
    est = estimates_for(coco_gt, load_results(coco_dir / "blazepose_gtboxes.json",
                                              coco_gt.spec), rows)
    filled = ~lab & (est[..., 2] > 0)
    assert filled.any()
    np.testing.assert_allclose(dets.keypoints[filled, :2], est[filled, :2], atol=1e-3)
    assert np.all(dets.scores == 1.0)
    again = synthesize_file(coco_dir / "test_coco.json", tmp_path / "again.json", seed=4,
                            trainset_results=coco_dir / "blazepose_gtboxes.json")
    assert again.read_bytes() == out.read_bytes()
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_correlated_errors_group_inversions_and_misses_per_person(coco_gt: GroundTruth) -> None:
    kp = np.repeat(coco_gt.keypoints[coco_gt.num_labelled >= 12], 300, axis=0)
    area = np.repeat(coco_gt.areas[coco_gt.num_labelled >= 12], 300)
    spec = coco_gt.spec
    base = load_profile("default")
    plain = synthesize(kp, area, spec, base, 0)
    # the default profile has no correlated errors, and drawing none leaves the stream as it was
    assert not any(base.correlated.values())
    data = base.to_dict()
    assert "correlated" not in data
    for kind in ("person_inversion", "group_inversion", "person_miss"):
        data["correlated"] = {kind: 0.2}
        profile = ErrorProfile.from_dict(data)
        poses, types = synthesize(kp, area, spec, profile, 0)
        assert np.all((types != ABSENT) == (poses[..., 2] > 0))
        code = MISS if kind == "person_miss" else INVERSION
        n_code = (types == code).sum(1)
        n_code_plain = (plain[1] == code).sum(1)
        if kind == "group_inversion":  # a body group: both sides of its pairs together
            lower = [spec.index(n) for n in ("left_knee", "right_knee", "left_ankle",
                                             "right_ankle")]
            n_code = 4 * (types[:, lower] == INVERSION).all(1)
            n_code_plain = 4 * (plain[1][:, lower] == INVERSION).all(1)
        many = 8 if kind != "group_inversion" else 4
        # about a fifth of the persons (or of their lower bodies) are now wrong as a whole
        share = (n_code >= many).mean()
        assert 0.12 < share < 0.22, (kind, share)
        assert (n_code_plain >= many).mean() < 0.02
        # the recorded types are still what the positions say (coco-analyze's rule)
        got = argmax_classify(poses, kp, area, np.zeros((len(kp), 0, *kp.shape[1:])),
                              np.zeros((len(kp), 0)), spec)
        assert np.array_equal(got, types)
    assert ErrorProfile.from_dict(data) == ErrorProfile.from_dict(data)
    assert ErrorProfile.from_dict(data) != base


@pytest.mark.parametrize(("value", "needle"), [({"person_flip": 0.1}, "unknown key"),
                                               ({"person_miss": 1.5}, "probability"),
                                               ("0.1", "mapping")])
def test_correlated_errors_are_checked(value: object, needle: str) -> None:
    from posefix.profile import ProfileError

    data = load_profile("default").to_dict()
    data["correlated"] = value
    with pytest.raises(ProfileError, match=needle):
        ErrorProfile.from_dict(data, source="mine.yaml")


def test_demo_recipe_profile_loads_with_the_default_rates() -> None:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "profile.yaml"
    profile = load_profile(recipe)
    default = load_profile("default")
    np.testing.assert_array_equal(profile.rates, default.rates)
    set_ = ("person_inversion", "group_inversion", "person_miss")
    assert all(0 < profile.correlated[k] < 0.1 for k in set_)
    # the shipped model was trained without collapsed limbs or inversions on the partner
    assert profile.correlated["limb_inversion"] == 0 and profile.inversion_on_partner == 0


def _full_persons(gt: GroundTruth, copies: int) -> tuple[np.ndarray, np.ndarray]:
    keep = gt.num_labelled >= 12
    return np.repeat(gt.keypoints[keep], copies, axis=0), np.repeat(gt.areas[keep], copies)


def _with(profile: ErrorProfile, **fields: object) -> ErrorProfile:
    data = profile.to_dict()
    data.update(fields)
    return ErrorProfile.from_dict(data)


def test_limb_inversion_puts_one_limb_onto_the_other(coco_gt: GroundTruth) -> None:
    """A collapsed limb: one side's elbow and wrist inverted, on the other arm's joints
    (within KS 0.85 of them), the other arm's keypoints not inverted."""
    kp, area = _full_persons(coco_gt, 300)
    spec = coco_gt.spec
    base = load_profile("default")
    assert base.limbs == (("left_elbow", "left_wrist"), ("left_knee", "left_ankle"))
    profile = _with(base, correlated={"limb_inversion": 0.3})
    arm_l = [spec.index("left_elbow"), spec.index("left_wrist")]
    arm_r = [spec.index("right_elbow"), spec.index("right_wrist")]

    def collapsed(types: np.ndarray) -> np.ndarray:
        inv = types == INVERSION
        return ((inv[:, arm_l].all(1) & ~inv[:, arm_r].any(1))
                | (inv[:, arm_r].all(1) & ~inv[:, arm_l].any(1)))

    poses, types = synthesize(kp, area, spec, profile, 0)
    _, plain = synthesize(kp, area, spec, base, 0)
    share = collapsed(types).mean()
    assert 0.18 < share < 0.32, share  # 0.3 where both arms' inversions can be made
    assert collapsed(plain).mean() < 0.01
    hit = collapsed(types)
    both = hit[:, None] & np.isin(np.arange(spec.num_keypoints), arm_l + arm_r)[None]
    moved = both & (types == INVERSION)
    partner_ks = keypoint_similarity(poses, kp[:, spec.partner_index], area, spec.sigma_array)
    assert partner_ks[moved].min() >= 0.85
    # left and right arms are moved about equally often
    left = (hit & (types[:, arm_l[0]] == INVERSION)).sum()
    assert 0.35 < left / hit.sum() < 0.65
    got = argmax_classify(poses, kp, area, np.zeros((len(kp), 0, *kp.shape[1:])),
                          np.zeros((len(kp), 0)), spec)
    assert np.array_equal(got, types)


def test_inversion_on_partner_puts_inversions_on_the_partner_joint(coco_gt: GroundTruth) -> None:
    kp, area = _full_persons(coco_gt, 200)
    spec = coco_gt.spec
    base = load_profile("default")
    ks_of = {}
    for share in (0.0, 1.0):
        profile = _with(base, inversion_on_partner=share)
        poses, types = synthesize(kp, area, spec, profile, 3)
        inv = types == INVERSION
        assert inv.sum() > 200
        ks_of[share] = keypoint_similarity(poses, kp[:, spec.partner_index], area,
                                           spec.sigma_array)[inv]
        assert np.array_equal(argmax_classify(
            poses, kp, area, np.zeros((len(kp), 0, *kp.shape[1:])), np.zeros((len(kp), 0)),
            spec), types)
    assert ks_of[1.0].min() >= 0.85
    assert (ks_of[0.0] < 0.85).mean() > 0.4  # the paper's draw: mostly off the joint


def test_fit_profile_measures_the_correlated_rates(coco_gt: GroundTruth) -> None:
    kp, area = _full_persons(coco_gt, 2000)
    spec = coco_gt.spec
    rates = {"person_inversion": 0.05, "group_inversion": 0.05, "limb_inversion": 0.1,
             "person_miss": 0.05}
    profile = _with(load_profile("default"), correlated=rates)
    _, types = synthesize(kp, area, spec, profile, 5)
    nl = (types != ABSENT).sum(1)
    fitted = fit_profile(types, nl, np.zeros(len(types), dtype=np.int64), spec, min_count=300)
    for kind, rate in rates.items():
        # a correlated inversion cannot always be made (joints too close): a little less
        assert 0.7 * rate < fitted.correlated[kind] < 1.15 * rate, (kind, fitted.correlated)
    # the keypoints those events explain are left out of the per-keypoint rates
    g = fitted.group_names.index("arms")
    assert abs(fitted.rates[g, -1, 0, INVERSION] - profile.rates[g, -1, 0, INVERSION]) < 0.012
    assert fitted.limbs == profile.limbs
    again = ErrorProfile.from_dict(fitted.to_dict())  # a fitted profile's file keeps them
    assert again.correlated == fitted.correlated and again.limbs == fitted.limbs


@pytest.mark.parametrize(("fields", "needle"), [
    ({"correlated": {"limb_inversion": 0.1}, "limbs": []}, "needs the limbs"),
    ({"limbs": [["left_elbow"], ["left_elbow", "left_wrist"]]}, "each keypoint once"),
    ({"limbs": "left_elbow"}, "list of lists"),
    ({"inversion_on_partner": 1.5}, "probability")])
def test_limbs_and_inversion_on_partner_are_checked(fields: dict, needle: str) -> None:
    from posefix.profile import ProfileError

    with pytest.raises(ProfileError, match=needle):
        _with(load_profile("default"), **fields)
