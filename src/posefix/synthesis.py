"""Input-pose synthesis (paper section 4): realistic erroneous poses made from ground truth.

Every labelled keypoint of a person gets one error type of :mod:`posefix.taxonomy`, drawn
with the probabilities of an :class:`~posefix.profile.ErrorProfile` (by joint group, number
of labelled keypoints and number of overlapping persons), and a position that makes it that
type. With ``d_k`` the distance at which the keypoint's KS equals ``k``:

- good: a uniform angle and a radius uniform in ``[0, d_0.85)`` from the ground truth;
- jitter: radius in ``[d_0.85, d_0.5)`` from the ground truth;
- inversion: radius in ``[0, d_0.5)`` from the same person's left/right partner keypoint
  (``[0, d_0.85)``, on the partner's joint, for a profile's ``inversion_on_partner`` share
  and for collapsed limbs, see :class:`~posefix.profile.ErrorProfile`);
- swap: radius in ``[0, d_0.5)`` from the same or the partner keypoint of another person
  whose box overlaps (IoU >= 0.1);
- miss: radius in ``[d_0.5, d_0.1)`` from the ground truth (weight 4) or from one of the
  other candidate sources (weight 1 each), as the reference does.

As in the reference, a position is kept only if its nearest candidate source (ground truth,
partner, other persons' keypoints) is the intended one; a miss must be farther than
``d_0.5`` from every source. One deliberate difference: an inversion or swap must also be
farther than ``d_0.5`` from every other source, its own ground truth included (the
reference only asks it to be nearer its partner or neighbour than its ground truth, which
lets a diagnosis call it jitter). So the recorded type is the type a diagnosis assigns,
whether it asks which source has the highest KS (coco-analyze) or checks the own keypoint,
the partner and other persons in turn (:mod:`posefix.diagnosis`). Nearness is measured in
KS units, each source with its own person's area where ``others_areas`` is given.

The reference rejection-samples 500 points per type and keypoint; here the type is drawn
first and two candidate positions per keypoint are drawn at once, vectorized over all
keypoints of all persons, the first valid one kept. A keypoint with no valid candidate even
after two larger draws (290 candidates in all) cannot have that type: the type is dropped,
the remaining probabilities renormalized and another type drawn (which gives the same
distribution as the reference's drop-and-renormalize). A keypoint for which no type can be
made is left absent.

Unlabelled keypoints take, when given, an estimator's prediction on the training set
(``estimated``; in files, a COCO results file matched to the ground truth by box IoU), else
they are absent. Their type is ``ABSENT``: types describe errors against a ground truth.
"""

from __future__ import annotations

import numpy as np

from .geometry import box_from_keypoints, paired_box_iou
from .io import (
    Detections,
    GroundTruth,
    same_image_pairs,
)
from .profile import ErrorProfile, load_profile
from .spec import KeypointSpec
from .taxonomy import ABSENT, GOOD, INVERSION, JITTER, KS_GOOD, KS_JITTER, KS_MISS, MISS, SWAP

__all__ = [
    "estimates_for",
    "overlap_index",
    "overlapping_persons",
    "synthesize",
]

# KS thresholds as "KS exponents" e = -log KS (e grows with distance).
_E_GOOD = -np.log(KS_GOOD)
_E_JITTER = -np.log(KS_JITTER)
# Candidates drawn per keypoint at once, then again, more, for the keypoints where none
# was valid (about 1.5% after the first draw); after the last the type is impossible.
_DRAWS = (2, 32, 256)
# Largest number of (keypoint, candidate, source) distances computed at once.
_CHUNK = 1 << 21
# Weight of the ground truth, relative to each other source, as the centre of a miss.
_MISS_GT_WEIGHT = 4.0


def synthesize(
    keypoints: np.ndarray,
    areas: np.ndarray,
    spec: KeypointSpec,
    profile: ErrorProfile | str = "default",
    rng: np.random.Generator | int | None = None,
    others: np.ndarray | None = None,
    estimated: np.ndarray | None = None,
    *,
    others_areas: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesize erroneous input poses for N persons.

    Args:
        keypoints: (N, K, 3) ground truth ``x, y, v`` (v > 0 labelled).
        areas: (N,) person areas (as in OKS).
        spec: keypoint layout (sigmas, left/right partners, ignored keypoints).
        profile: error profile, or its name or file.
        rng: a numpy Generator (or a seed); the result is a function of its state.
        others: (N, M, K, 3) keypoints of the other persons overlapping each person
            (:func:`overlapping_persons`), v = 0 padding; None for none.
        estimated: (N, K, 3) an estimator's positions, used for unlabelled keypoints where
            its v > 0; None to leave unlabelled keypoints absent.
        others_areas: (N, M) areas of the ``others``; by default each person's own area
            measures closeness to its neighbours' keypoints too.

    Returns:
        ``(poses, types)``: poses (N, K, 3) ``x, y, v`` with v = 1 present and 0 absent
        (x = y = 0 there); types (N, K) int8 taxonomy codes, ``ABSENT`` wherever no error
        was synthesized (unlabelled keypoints, including those filled from ``estimated``).
    """
    profile = load_profile(profile)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    kp = np.asarray(keypoints, dtype=np.float64)
    N, K = kp.shape[:2]
    if K != spec.num_keypoints or kp.shape[2] < 3:
        raise ValueError(f"keypoints have shape {kp.shape}; spec {spec.name} needs "
                         f"(N, {spec.num_keypoints}, 3)")
    area = np.asarray(areas, dtype=np.float64).reshape(N)
    if others is None:
        others = np.zeros((N, 0, K, 3))
    others = np.asarray(others, dtype=np.float64)
    if others.shape[0] != N or others.shape[2] != K:
        raise ValueError(f"others have shape {others.shape}; expected ({N}, M, {K}, 3)")
    M = others.shape[1]
    used = spec.used_mask
    lab = (kp[..., 2] > 0) & used
    other_lab = (others[..., 2] > 0) & used
    num_overlap = other_lab.any(-1).sum(1)
    probs = profile.probabilities(spec, lab.sum(1), num_overlap)
    tight = np.zeros((N, K), dtype=bool)
    if any(profile.correlated.values()):
        probs, tight = _correlated(probs, profile, spec, lab, rng)
    if profile.inversion_on_partner > 0:
        tight |= lab & (rng.random((N, K)) < profile.inversion_on_partner)

    poses = np.zeros((N, K, 3))
    types = np.full((N, K), ABSENT, dtype=np.int8)
    n_idx, j_idx = np.nonzero(lab)
    if len(n_idx):
        sx, sy, ok = _sources(kp, lab, others, n_idx, j_idx, spec)
        scale, radii = _scales(area, others_areas, n_idx, j_idx, spec, M)
        sampler = _Sampler(sx, sy, ok, scale, radii, rng, tight[n_idx, j_idx])
        pos, t = sampler.run(probs[n_idx, j_idx])
        done = t != ABSENT
        poses[n_idx[done], j_idx[done], :2] = pos[done]
        poses[n_idx[done], j_idx[done], 2] = 1.0
        types[n_idx, j_idx] = t
    if estimated is not None:
        est = np.asarray(estimated, dtype=np.float64).reshape(N, K, -1)
        fill = ~lab & used & (est[..., 2] > 0)
        poses[fill, :2] = est[fill, :2]
        poses[fill, 2] = 1.0
    return poses, types


def _sources(kp: np.ndarray, lab: np.ndarray, others: np.ndarray, n_idx: np.ndarray,
             j_idx: np.ndarray, spec: KeypointSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate sources of each labelled keypoint (person ``n_idx``, keypoint ``j_idx``),
    source-major (S, L): 0 its ground truth, 1 its partner, then the M others' same
    keypoint and the M others' partner keypoint. Sources that do not exist sit at infinity.
    Returns ``(x, y, exists)``."""
    M = others.shape[1]
    used = spec.used_mask
    L, S = len(n_idx), 2 + 2 * M
    hp = spec.partner_index[j_idx] >= 0
    p_idx = np.where(hp, spec.partner_index[j_idx], j_idx)
    sx, sy = np.empty((S, L)), np.empty((S, L))
    ok = np.empty((S, L), dtype=bool)
    sx[0], sy[0] = kp[n_idx, j_idx, 0], kp[n_idx, j_idx, 1]
    sx[1], sy[1] = kp[n_idx, p_idx, 0], kp[n_idx, p_idx, 1]
    ok[0] = True
    ok[1] = hp & lab[n_idx, p_idx]
    if M:
        same = others[n_idx, :, j_idx].transpose(2, 1, 0)  # 3, M, L
        part = others[n_idx, :, p_idx].transpose(2, 1, 0)
        sx[2:2 + M], sy[2:2 + M], sx[2 + M:], sy[2 + M:] = same[0], same[1], part[0], part[1]
        ok[2:2 + M] = same[2] > 0
        ok[2 + M:] = (part[2] > 0) & hp & used[p_idx]
    sx[~ok] = np.inf
    sy[~ok] = np.inf
    return sx, sy, ok


def _scales(area: np.ndarray, others_areas: np.ndarray | None, n_idx: np.ndarray,
            j_idx: np.ndarray, spec: KeypointSpec, M: int,
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(S, L) ``scale`` of each source (e = d^2 * scale = -log KS, scale = 1 / (2 * area *
    (2 sigma)^2)) and the distances at which KS is 0.85, 0.5, 0.1 around each keypoint
    (as :func:`posefix.similarity.ks_distance`)."""
    L, S = len(n_idx), 2 + 2 * M
    var8 = 8.0 * spec.sigma_array[j_idx] ** 2
    own_area = area[n_idx] + np.spacing(1)
    scale = np.broadcast_to(1.0 / (own_area * var8), (S, L)).copy()
    if M and others_areas is not None:
        oa = np.asarray(others_areas, dtype=np.float64).reshape(len(area), M)[n_idx].T  # M, L
        scale[2:2 + M] = scale[2 + M:] = 1.0 / ((oa + np.spacing(1)) * var8)
    unit = np.sqrt(own_area * var8)
    radii = [unit * np.sqrt(-np.log(k)) for k in (KS_GOOD, KS_JITTER, KS_MISS)]
    return scale, radii


def _correlated(probs: np.ndarray, profile: ErrorProfile, spec: KeypointSpec,
                lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Type probabilities (N, K, 5) with the profile's correlated errors drawn per person:
    the chosen keypoints' rows become (almost) one-hot on inversion or miss; the small
    remainder keeps the per-keypoint rates for where that type cannot be made. Also (N, K)
    the keypoints of collapsed limbs, whose inversions are drawn within KS 0.85 of the
    partner."""
    rates = profile.correlated
    N, K = lab.shape
    groups = [np.asarray(idx, dtype=np.int64) for idx in spec.groups.values()]
    u = rng.random((N, 2 + len(groups)))
    miss = (u[:, 0] < rates["person_miss"])[:, None] & lab
    invert = np.broadcast_to((u[:, 1] < rates["person_inversion"])[:, None], (N, K)).copy()
    for g, idx in enumerate(groups):
        invert[:, idx] |= (u[:, 2 + g] < rates["group_inversion"])[:, None]
    partner = spec.partner_index
    has = partner >= 0
    invert &= lab & has[None] & lab[:, np.where(has, partner, 0)] & ~miss
    out = probs.copy()
    moved = np.zeros((N, K), dtype=bool)
    if rates["limb_inversion"] > 0:
        moved, stays = _collapsed_limbs(rates["limb_inversion"], profile, spec, N, rng)
        free = ~invert & ~miss
        moved &= free & lab
        out[stays & free, INVERSION] = 0.0  # the other limb stays: a collapse, no exchange
    for mask, code in ((invert | moved, INVERSION), (miss, MISS)):
        onehot = np.zeros(5)
        onehot[code] = 1.0
        out[mask] = 1e-3 * probs[mask] + (1 - 1e-3) * onehot
    return out, moved


def _collapsed_limbs(rate: float, profile: ErrorProfile, spec: KeypointSpec, N: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) masks ``(moved, stays)``: per person and limb of the profile, with probability
    ``rate``, one side (either, equally likely) is moved onto the other, which stays."""
    side, other = profile.limb_index(spec)
    K = spec.num_keypoints
    moved = np.zeros((N, K), dtype=bool)
    stays = np.zeros((N, K), dtype=bool)
    if not len(side):
        return moved, stays
    u = rng.random((N, len(side), 2))
    hit = u[..., 0] < rate
    swap_sides = (u[..., 1] < 0.5)[..., None]
    src = np.where(swap_sides, other[None], side[None])  # N, B, J
    dst = np.where(swap_sides, side[None], other[None])
    n = np.broadcast_to(np.arange(N)[:, None, None], src.shape)
    take = hit[..., None] & (src >= 0)
    moved[n[take], src[take]] = True
    stays[n[take], dst[take]] = True
    return moved, stays


class _Sampler:
    """Draws types and positions for L keypoints at once (see the module docstring).

    Sources are source-major: ``sx``, ``sy``, ``ok``, ``scale`` are (S, L) with S = 2 + 2M
    (own ground truth, partner, M others' same keypoint, M others' partner keypoint).
    """

    def __init__(self, sx: np.ndarray, sy: np.ndarray, ok: np.ndarray, scale: np.ndarray,
                 radii: list[np.ndarray], rng: np.random.Generator, tight: np.ndarray) -> None:
        self.ok, self.rng = ok, rng
        self.sx_rows, self.sy_rows = np.ascontiguousarray(sx.T), np.ascontiguousarray(sy.T)
        self.scale_rows = np.ascontiguousarray(scale.T)
        d85, d50, d10 = radii
        zero = np.zeros_like(d85)
        # Radius range [lo, hi) in pixels of each type (by code): (L, 5) each.
        self.r_lo = np.empty((len(d85), 5))
        self.r_hi = np.empty((len(d85), 5))
        for code, lo, hi in ((GOOD, zero, d85), (JITTER, d85, d50), (INVERSION, zero, d50),
                             (SWAP, zero, d50), (MISS, d50, d10)):
            self.r_lo[:, code], self.r_hi[:, code] = lo, hi
        # Collapsed limbs and the inversion_on_partner share: on the partner joint, within
        # KS 0.85 of it (where none can be made there, the type is dropped as any other).
        self.r_hi[tight, INVERSION] = d85[tight]

    def run(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Types (L,) int8 and positions (L, 2) for keypoints with type probabilities (L, 5)."""
        L = len(probs)
        avail = np.ones((L, 5), dtype=bool)
        avail[:, INVERSION] = self.ok[1]
        avail[:, SWAP] = self.ok[2:].any(0)
        out_xy = np.zeros((L, 2))
        out_t = np.full(L, ABSENT, dtype=np.int8)
        pending = np.arange(L)
        while len(pending):
            p = probs[pending] * avail[pending]
            cum = np.cumsum(p, axis=1)
            alive = cum[:, -1] > 0
            pending, cum = pending[alive], cum[alive]
            if not len(pending):
                break
            u = self.rng.random(len(pending)) * cum[:, -1]
            t = np.minimum((cum <= u[:, None]).sum(1), 4)
            xy, found = self.draw_chunked(pending, t, _DRAWS[0])
            for C in _DRAWS[1:]:
                if found.all():
                    break
                again = np.flatnonzero(~found)
                xy[again], found[again] = self.draw_chunked(pending[again], t[again], C)
            out_xy[pending[found]] = xy[found]
            out_t[pending[found]] = t[found]
            avail[pending[~found], t[~found]] = False
            pending = pending[~found]
        return out_xy, out_t

    def draw_chunked(self, idx: np.ndarray, t: np.ndarray, C: int,
                     ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`draw` in slices that bound the (sources, keypoints, C) work arrays."""
        step = max(1, _CHUNK // (C * len(self.ok)))
        if len(idx) <= step:
            return self.draw(idx, t, C)
        parts = [self.draw(idx[i:i + step], t[i:i + step], C) for i in range(0, len(idx), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def draw(self, idx: np.ndarray, t: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
        """C candidates for keypoints ``idx`` of types ``t``; the first valid one of each."""
        rng = self.rng
        n = len(idx)
        # Gather rows of the keypoint-major copies, then view them source-major.
        sx, sy, scale = self.sx_rows[idx].T, self.sy_rows[idx].T, self.scale_rows[idx].T
        S = len(sx)
        # Centre of each candidate: the ground truth (good, jitter), the partner
        # (inversion), or a source drawn by weight (swap: others; miss: all, gt x4).
        centre = np.broadcast_to((t == INVERSION).astype(np.int64)[:, None], (n, C)).copy()
        drawn = np.flatnonzero((t == SWAP) | (t == MISS))
        if len(drawn):
            w = self.ok[:, idx[drawn]].T.astype(np.float64)
            w[:, :2] *= (t[drawn] == MISS)[:, None]
            w[:, 0] *= _MISS_GT_WEIGHT
            cw = np.cumsum(w, axis=1)
            u = rng.random((len(drawn), C)) * cw[:, -1:]
            centre[drawn] = np.minimum((cw[:, None, :] <= u[..., None]).sum(-1), S - 1)
        lo = self.r_lo[idx, t][:, None]
        r = lo + (self.r_hi[idx, t][:, None] - lo) * rng.random((n, C))
        a = rng.random((n, C)) * (2 * np.pi)
        cols = np.arange(n)[:, None]
        px = sx[centre, cols] + r * np.cos(a)
        py = sy[centre, cols] + r * np.sin(a)
        e = np.subtract(px[None], sx[:, :, None])  # S, n, C: -log KS to each source
        np.square(e, out=e)
        dy = np.subtract(py[None], sy[:, :, None])
        np.square(dy, out=dy)
        e += dy
        e *= scale[:, :, None]
        # Source classes: own ground truth, partner, nearest other person.
        own, par = e[0], e[1]
        oth = np.full_like(own, np.inf)
        for s in range(2, S):
            np.minimum(oth, e[s], out=oth)
        # The intended class (good, jitter: own; inversion: partner; swap: other; miss:
        # none) must lie in the type's KS range and every other class must be farther --
        # for inversions and swaps also beyond KS 0.5, so that the type is the same
        # whether a diagnosis asks "which source is nearest" or checks own, partner and
        # other persons in turn.
        m_po, m_ao, m_ap = np.minimum(par, oth), np.minimum(own, oth), np.minimum(own, par)
        nearest = np.minimum(own, m_po)
        want = _INTENDED[t][:, None]
        e_int = np.choose(want, [own, par, oth, nearest])
        rest = np.choose(want, [m_po, m_ao, m_ap, nearest])
        valid = ((e_int >= _E_LO[t][:, None]) & (e_int < _E_HI[t][:, None])
                 & (rest >= np.maximum(e_int, _E_FLOOR[t][:, None])))
        found = valid.any(1)
        first = valid.argmax(1)
        k = np.arange(n)
        return np.stack([px[k, first], py[k, first]], axis=1), found


def _by_type(values: dict[int, float]) -> np.ndarray:
    out = np.zeros(len(values))
    out[list(values)] = list(values.values())
    return out


# Per type code: the source class a position must be nearest to (0 own ground truth,
# 1 partner, 2 another person, 3 none: a miss), the range [lo, hi) of -log KS to it, and
# the least -log KS to every other class.
_INTENDED = _by_type({GOOD: 0, JITTER: 0, INVERSION: 1, SWAP: 2, MISS: 3}).astype(np.int64)
_E_LO = _by_type({GOOD: 0.0, JITTER: _E_GOOD, INVERSION: 0.0, SWAP: 0.0, MISS: _E_JITTER})
_E_HI = _by_type({GOOD: _E_GOOD, JITTER: _E_JITTER, INVERSION: _E_JITTER, SWAP: _E_JITTER,
                  MISS: np.inf})
_E_FLOOR = _by_type({GOOD: 0.0, JITTER: 0.0, INVERSION: _E_JITTER, SWAP: _E_JITTER,
                     MISS: 0.0})


# --------------------------------------------------------------------------- neighbours
def _rows(gt: GroundTruth, rows: np.ndarray | None) -> np.ndarray:
    return np.arange(len(gt)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)


def overlap_index(gt: GroundTruth, rows: np.ndarray | None = None, iou: float = 0.1,
                  ) -> np.ndarray:
    """For each person of ``rows`` (default all), the gt rows of the other persons of its
    image whose box overlaps its box by IoU >= ``iou``: (N, M) int64, -1 padded, M the
    largest count. Only non-crowd persons with a labelled keypoint count as others (the
    reference's training persons)."""
    rows = _rows(gt, rows)
    eligible = ~gt.iscrowd & ((gt.keypoints[..., 2] > 0) & gt.spec.used_mask).any(1)
    cand = np.flatnonzero(eligible)
    ia, ib = same_image_pairs(gt.image_ids[rows], gt.image_ids[cand])
    ib = cand[ib]
    keep = ib != rows[ia]
    ia, ib = ia[keep], ib[keep]
    ov = paired_box_iou(gt.boxes[rows[ia]], gt.boxes[ib]) >= iou
    ia, ib = ia[ov], ib[ov]
    counts = np.bincount(ia, minlength=len(rows))
    out = np.full((len(rows), int(counts.max(initial=0))), -1, dtype=np.int64)
    pos = np.arange(len(ia)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[ia, pos] = ib
    return out


def overlapping_persons(gt: GroundTruth, rows: np.ndarray | None = None, iou: float = 0.1,
                        ) -> np.ndarray:
    """Keypoints (N, M, K, 3) of the persons overlapping each person of ``rows``
    (see :func:`overlap_index`), v = 0 padding."""
    idx = overlap_index(gt, rows, iou)
    out = gt.keypoints[np.maximum(idx, 0)].copy()
    out[idx < 0] = 0.0
    return out


def estimates_for(gt: GroundTruth, detections: Detections, rows: np.ndarray | None = None,
                  iou: float = 0.1) -> np.ndarray:
    """An estimator's pose for each gt person of ``rows``: (N, K, 3) with v = 1 where matched.

    Each person takes the detection of its image whose box (the results' ``bbox``, else
    the extent of its keypoints) has the highest IoU with the person's box, if that IoU is
    at least ``iou``, as the reference does with its test-on-trainset results.
    """
    rows = _rows(gt, rows)
    K = gt.spec.num_keypoints
    out = np.zeros((len(rows), K, 3))
    dets = detections
    if len(dets) == 0 or len(rows) == 0:
        return out
    boxes = np.array(dets.boxes, dtype=np.float64)
    missing = ~np.isfinite(boxes).all(1)
    if missing.any():
        boxes[missing] = box_from_keypoints(dets.keypoints[missing], enlarge=1.0, min_size=1.0)
    ia, ib = same_image_pairs(gt.image_ids[rows], dets.image_ids)
    if not len(ia):
        return out
    a, b = gt.boxes[rows[ia]], boxes[ib]
    pair_iou = paired_box_iou(a, b)
    # Best detection per person: sort pairs by (person, -IoU) and take each person's first.
    order = np.lexsort((-pair_iou, ia))
    ia, ib, pair_iou = ia[order], ib[order], pair_iou[order]
    first = np.r_[True, ia[1:] != ia[:-1]]
    take = first & (pair_iou >= iou)
    out[ia[take], :, :2] = dets.keypoints[ib[take], :, :2]
    out[ia[take], :, 2] = 1.0
    return out
