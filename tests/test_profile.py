"""Error profiles: the shipped reference tables, name-based groups, files, fitting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from posefix.config import ConfigError
from posefix.profile import (
    ErrorProfile,
    ProfileError,
    available_profiles,
    fit_profile,
    load_profile,
    save_profile,
)
from posefix.spec import KeypointSpec, load_spec
from posefix.taxonomy import ABSENT, GOOD, INVERSION, JITTER, MISS, SWAP


def reference_probs(j: int, num_valid: int, num_overlap: int) -> tuple[float, ...]:
    """The PoseFix reference's if/else tables for COCO keypoint index j, written out
    independently of the profile file: (good, jitter, inversion, swap, miss)."""
    if num_valid <= 10:
        jitter = 0.15 if j == 0 or 13 <= j <= 16 else 0.20 if 1 <= j <= 10 else 0.25
    else:
        jitter = 0.10 if j == 0 or 13 <= j <= 16 else 0.15 if 1 <= j <= 10 else 0.20
    face, shoulder_ankle = j <= 4, j in (5, 6, 15, 16)
    if num_valid <= 5:
        miss = 0.15 if face else 0.20 if shoulder_ankle else 0.25
    elif num_valid <= 10:
        miss = 0.10 if face else 0.13 if shoulder_ankle else 0.15
    else:
        miss = 0.02 if face else 0.05 if shoulder_ankle else 0.10
    inv = 0.01 if j <= 4 else 0.03 if j <= 10 else 0.06
    crowded = (num_valid <= 10 and num_overlap > 0) or (num_valid <= 15 and num_overlap >= 3)
    if crowded:
        swap = 0.02 if j <= 4 else 0.15 if j <= 10 else 0.10
    else:
        swap = 0.01 if j <= 4 else 0.06 if j <= 10 else 0.03
    return (1 - jitter - miss - inv - swap, jitter, inv, swap, miss)


def test_default_profile_is_the_reference_table() -> None:
    spec = load_spec("coco17")
    prof = load_profile("default")
    nl, no = np.meshgrid(np.arange(18), np.arange(6), indexing="ij")
    got = prof.probabilities(spec, nl.ravel(), no.ravel())
    want = np.array([[reference_probs(j, a, b) for j in range(17)]
                     for a, b in zip(nl.ravel(), no.ravel(), strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert "default" in available_profiles()


def test_groups_by_name_fallback_and_ignored() -> None:
    prof = load_profile("default")
    coco = load_spec("coco17")
    crowd = load_spec("crowdpose")
    p_coco = prof.probabilities(coco, [8], [1])[0]
    p_crowd = prof.probabilities(crowd, [8], [1])[0]
    for name in crowd.keypoints[:12]:  # limbs share names with COCO
        np.testing.assert_array_equal(p_crowd[crowd.index(name)], p_coco[coco.index(name)])
    # CrowdPose's head and neck take the nose's values (as BUCTD's CrowdPose port does).
    np.testing.assert_array_equal(p_crowd[crowd.index("head")], p_coco[coco.index("nose")])
    # A keypoint the profile does not name falls back by its spec body group, then to the
    # default group.
    spec = KeypointSpec(name="odd", keypoints=("tail_tip", "left_paw", "right_paw", "nose"),
                        flip_pairs=((1, 2),), sigmas=(0.05,) * 4,
                        groups={"lower_body": (0,)})
    g = [prof.group_names[i] for i in prof.group_index(spec)]
    assert g == [prof.fallback["lower_body"], prof.default_group, prof.default_group,
                 "head_centre"]
    # PoseTrack ignores the ears: never synthesized.
    pt = load_spec("posetrack")
    p = prof.probabilities(pt, [12, 3], [0, 2])
    assert np.all(p[:, list(pt.ignore)] == 0)
    np.testing.assert_allclose(p[:, pt.used_mask].sum(-1), 1.0)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    prof = load_profile("default")
    for name in ("p.yaml", "p.json"):
        out = save_profile(prof, tmp_path / "sub" / name)
        back = load_profile(out)
        np.testing.assert_allclose(back.rates, prof.rates, atol=1e-9)
        assert back.group_keypoints == prof.group_keypoints
        assert back.fallback == prof.fallback and back.default_group == prof.default_group
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["p.json", "p.yaml"]
    json.loads((tmp_path / "sub" / "p.json").read_text())  # valid JSON


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return {"name": "x", "labelled_bins": [10], "overlap_bins": [0],
            "groups": {"all": {"keypoints": ["nose"], "jitter": 0.1, "miss": [0.2, 0.1],
                               "swap": [[0.0, 0.1], [0.0, 0.05]], "inversion": 0.01}}}


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d.pop("groups"), "missing field 'groups'"),
    (lambda d: d["groups"]["all"].update(jitter=0.9), "sum to more than 1"),
    (lambda d: d["groups"]["all"].update(miss=[0.1, 0.1, 0.1]), "groups.all.miss"),
    (lambda d: d["groups"]["all"].update(swap=[[0.1], [0.1]]), "overlap bins"),
    (lambda d: d["groups"]["all"].update(jitter="lots"), "groups.all.jitter"),
    (lambda d: d["groups"]["all"].update(jiter=0.1), "unknown key"),
    (lambda d: d.update(fallback={"face": "nope"}), "fallback.face"),
    (lambda d: d.update(labelled_bins=[-1]), "labelled_bins"),
    (lambda d: d.update(overlap_bins=[0.5]), "overlap_bins"),
])
def test_bad_files_name_file_and_field(tmp_path: Path, edit, needle: str) -> None:
    data = _base()
    load_profile(_write(tmp_path, data))  # the base is valid
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(path) in str(e.value) and needle in str(e.value)
    assert isinstance(e.value, ConfigError)  # the CLI reports it in one line


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError, match="not one of"):
        load_profile("no-such-profile")


def test_explicit_good_must_sum_to_one(tmp_path: Path) -> None:
    data = _base()
    data["groups"]["all"]["good"] = 0.5
    with pytest.raises(ProfileError, match="sum to 1"):
        load_profile(_write(tmp_path, data))
    data = {"name": "y", "labelled_bins": [], "overlap_bins": [],
            "groups": {"g": {"keypoints": [], "good": 0.7, "jitter": 0.3}}}
    prof = load_profile(_write(tmp_path, data))
    assert prof.rates.shape == (1, 1, 1, 5)
    np.testing.assert_allclose(prof.rates[0, 0, 0], [0.7, 0.3, 0, 0, 0])


def _simulate(prof: ErrorProfile, spec: KeypointSpec, nl: np.ndarray, no: np.ndarray,
              partner_labelled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels drawn from the choice model synthesis uses: unavailable types dropped."""
    p = prof.probabilities(spec, nl, no).copy()
    p[..., INVERSION] *= partner_labelled
    p[..., SWAP] *= (no > 0)[:, None]
    cum = np.cumsum(p, -1)
    u = rng.random(cum.shape[:2]) * cum[..., -1]
    return (cum <= u[..., None]).sum(-1)


def test_fit_recovers_the_generating_profile() -> None:
    spec = load_spec("coco17")
    base = load_profile("default")
    rng = np.random.default_rng(0)
    P = 60000
    nl = rng.integers(1, 18, P)
    no = rng.integers(0, 5, P)
    partner_labelled = rng.random((P, 17)) < 0.5
    labels = _simulate(base, spec, nl, no, partner_labelled, rng)
    # Unlabelled partners show as ABSENT labels, which is how fit_profile sees them.
    labelled = np.ones((P, 17), dtype=bool)
    has_p = spec.partner_index >= 0
    labelled[:, spec.partner_index[has_p]] = partner_labelled[:, has_p]
    # Keep each person's labels consistent: a keypoint is absent iff its partner's
    # 'partner_labelled' flag is off.
    labels = np.where(labelled, labels, ABSENT)
    pl_seen = np.zeros((P, 17), dtype=bool)
    pl_seen[:, has_p] = labelled[:, spec.partner_index[has_p]]
    assert np.array_equal(pl_seen[:, has_p], partner_labelled[:, has_p])
    fitted = fit_profile(labels, nl, no, spec, min_count=400)
    assert fitted.samples is not None
    well = fitted.samples >= 400
    assert well.sum() >= 40
    err = np.abs(fitted.rates - base.rates)[well]
    # Binomial standard error at >= 400 samples is at most 0.025; allow about 4 sigma.
    assert err.max() < 0.1, err.max()
    assert err.mean() < 0.015, err.mean()
    # Swaps are impossible without an overlapping person: kept from the base, and the
    # other rates are the observed ones scaled to the rest.
    np.testing.assert_allclose(fitted.rates[..., 0, SWAP], base.rates[..., 0, SWAP])
    # Half the partners are unlabelled, so the naive frequency of inversions is biased
    # low; the fit, corrected for unavailable types, is not.
    g = fitted.group_names.index("hips")
    hips = [spec.index("left_hip"), spec.index("right_hip")]
    cell = (base.labelled_bin(nl) == 2) & (base.overlap_bin(no) == 1)
    lab = labels[cell][:, hips]
    naive = (lab == INVERSION).sum() / (lab != ABSENT).sum()
    want = base.rates[g, 2, 1, INVERSION]
    assert abs(naive - want) > 0.025
    assert abs(fitted.rates[g, 2, 1, INVERSION] - want) < 0.01


def test_fit_exact_counts_and_fallbacks() -> None:
    spec = load_spec("coco17")
    base = load_profile("default")
    knee = spec.index("left_knee")
    g = base.group_names.index("knees")
    # 100 persons with 17 labelled keypoints and 1 overlapping person: the left knees are
    # 50 good, 20 jitter, 10 inversion, 10 swap, 10 miss; everything else good.
    labels = np.full((100, 17), GOOD)
    labels[50:70, knee] = JITTER
    labels[70:80, knee] = INVERSION
    labels[80:90, knee] = SWAP
    labels[90:, knee] = MISS
    nl = np.full(100, 17)
    no = np.ones(100, dtype=int)
    fitted = fit_profile(labels, nl, no, spec, min_count=100)
    lb, ob = base.labelled_bin([17])[0], base.overlap_bin([1])[0]
    # knees = left and right knee: 200 samples, the right knees all good.
    np.testing.assert_allclose(fitted.rates[g, lb, ob], [0.75, 0.1, 0.05, 0.05, 0.05])
    assert fitted.samples[g, lb, ob] == 200
    # Other labelled bins of the same group had no samples: they pool over labelled bins
    # (same overlap bin) before falling back to the base.
    np.testing.assert_allclose(fitted.rates[g, 0, ob], fitted.rates[g, lb, ob])
    # Overlap-0 cells pool over bins, where swaps were observable only in overlap 1-2.
    assert fitted.rates[g, lb, 0, SWAP] > 0
    # Groups never observed keep the base's rates.
    none = fit_profile(np.full((100, 17), ABSENT), nl, no, spec)
    np.testing.assert_allclose(none.rates, base.rates)
    # With too few samples for any pool, the base is kept.
    few = fit_profile(labels, nl, no, spec, min_count=10_000)
    np.testing.assert_allclose(few.rates, base.rates)


def test_fitted_profile_file_roundtrip(tmp_path: Path) -> None:
    spec = load_spec("coco17")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (500, 17))
    fitted = fit_profile(labels, np.full(500, 17), rng.integers(0, 4, 500), spec, min_count=20)
    back = load_profile(save_profile(fitted, tmp_path / "fit.yaml"))
    np.testing.assert_allclose(back.rates, fitted.rates, atol=1e-5)
    np.testing.assert_array_equal(back.samples, fitted.samples)
