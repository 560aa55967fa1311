"""Fix each input keypoint by the kind of its error (issue 21): a network with an error-kind
head (``model.error_kinds``) says, per input keypoint, how likely it is good, jitter, an
inversion, a swap or a miss; this module turns that into the output position, taking an
*input* position wherever one is right, so that the fix keeps the estimator's precision.

For the detections of one image (input keypoints, the network's refined keypoints and kind
probabilities, all in image pixels), with ``gate`` on P(gross) = P(inversion) + P(swap) +
P(miss):

* below the gate (or an absent input): the input keypoint stays; at the gate or above it is
  fixed (the decode gate's convention too: P(error) == gate refines);
* an **inversion** (the most likely gross kind) exchanges the keypoint with its left/right
  partner's *input* position, decided per keypoint (both of a pair must be inversions), per
  pair (their mean P(inversion) >= the gate) or per body group (``KeypointSpec.groups``:
  a pair is exchanged when its own mean is, or when the mean over the group's present
  pairs is); an inversion not exchanged is treated as a miss;
* a **swap** takes the same joint's input keypoint of another detection in the image that
  lies nearest the refined keypoint, if within KS ``swap_ks`` of it (else: a miss);
* a **miss** takes the refined keypoint, snapped (``snap`` > 0) to the nearest input
  keypoint of the same or the partner joint in the image within KS ``snap`` of it.

Everything is vectorized over detections and keypoints; :func:`fix_keypoints` is pure
numpy and knows nothing of crops or networks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .similarity import keypoint_similarity
from .spec import KeypointSpec
from .taxonomy import GROSS, INVERSION, MISS, SWAP

__all__ = ["INVERSION_MODES", "FixOptions", "FixResult", "fix_keypoints"]

INVERSION_MODES = ("off", "keypoint", "pair", "group")


@dataclass(frozen=True)
class FixOptions:
    """How :func:`fix_keypoints` decides and fixes (see the module docstring).

    The defaults are what measured best on the LSP test split with the demo recipe's
    error-kind model (``recipes/demo/README.md``): every gross error takes the refined
    keypoint; exchanging inversions, taking swaps from other detections and snapping
    never raised AP or mean OKS there.

    Attributes:
        gate: touch an input keypoint when P(inversion) + P(swap) + P(miss) >= this (None:
            the network's error gate, :meth:`resolve`).
        inversion: ``off`` (inversions are fixed as misses), ``keypoint``, ``pair`` or
            ``group``: what decides that left and right exchange their input positions.
        inversion_gate: the mean P(inversion) a pair or group needs (default: ``gate``).
        swap_ks: a swap takes another detection's same-joint input within this KS of the
            refined keypoint (0: swaps are fixed as misses).
        snap: snap a moved keypoint to the nearest input keypoint of the same or partner
            joint in the image within this KS of it (0: no snapping).
    """

    gate: float | None = None
    inversion: str = "off"
    inversion_gate: float | None = None
    swap_ks: float = 0.0
    snap: float = 0.0

    def __post_init__(self) -> None:
        if self.gate is not None and not 0 <= self.gate <= 1:
            raise ValueError(f"fix gate: must be in [0, 1], got {self.gate}")
        if self.inversion not in INVERSION_MODES:
            raise ValueError(f"fix inversion: must be one of {', '.join(INVERSION_MODES)}, "
                             f"got {self.inversion!r}")
        for name in ("inversion_gate", "swap_ks", "snap"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"fix {name}: must be in [0, 1], got {v}")


    def resolve(self, network_gate: float | None) -> FixOptions:
        """These options with the gate set (its own, else the network's); without any gate
        (None or 0) every present keypoint takes the refined one, as for a binary head
        without a gate (inversions and swaps are not fixed then)."""
        gate = self.gate if self.gate is not None else network_gate
        if not gate:
            return replace(self, gate=0.0, inversion="off", swap_ks=0.0, snap=0.0)
        return replace(self, gate=float(gate))


@dataclass
class FixResult:
    """Output keypoints (N, K, 2) and how each was decided, (N, K) int8: 0 kept, then the
    taxonomy code of the fix applied (INVERSION exchanged, SWAP taken from another
    detection, MISS the refined keypoint), and whether a refined keypoint was snapped."""

    coords: np.ndarray
    action: np.ndarray
    snapped: np.ndarray


def _exchange(kinds: np.ndarray, present: np.ndarray, spec: KeypointSpec,
              opts: FixOptions, touched: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """(N, K) which keypoints exchange positions with their partner (symmetric in pairs)."""
    n, k = present.shape
    has = spec.partner_index >= 0
    p = spec.flip_index  # the partner, or the keypoint itself where it has none
    both = present & present[:, p] & has[None]
    if opts.inversion == "off":
        return np.zeros((n, k), dtype=bool)
    if opts.inversion == "keypoint":
        inv = touched & (kind == INVERSION)
        return inv & inv[:, p] & both
    gate = (opts.gate or 0.0) if opts.inversion_gate is None else opts.inversion_gate
    pinv = np.where(both, (kinds[..., INVERSION] + kinds[:, p, INVERSION]) / 2, 0.0)
    if opts.inversion == "pair":
        return both & (pinv >= gate)
    out = np.zeros((n, k), dtype=bool)
    for idx in spec.groups.values():
        idx = np.asarray([i for i in idx if has[i]], dtype=np.int64)
        if not len(idx):
            continue
        cnt = both[:, idx].sum(1)
        mean = pinv[:, idx].sum(1) / np.maximum(cnt, 1)
        out[:, idx] = both[:, idx] & ((cnt > 0) & (mean >= gate))[:, None]
    return out | (both & (pinv >= gate))


def _nearest_input(target: np.ndarray, cand: np.ndarray, ok: np.ndarray, areas: np.ndarray,
                   sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of candidates (N, K, M, 2) with mask ``ok`` (N, K, M), the one with the highest KS
    to ``target`` (N, K, 2) (detection n's area): (its position (N, K, 2), that KS (N, K),
    -1 where no candidate is)."""
    ks = keypoint_similarity(cand.transpose(0, 2, 1, 3), target[:, None], areas[:, None],
                             sigmas).transpose(0, 2, 1)  # (N, M, K) -> (N, K, M)
    ks = np.where(ok, ks, -1.0)
    best = ks.argmax(-1)
    pos = np.take_along_axis(cand, best[..., None, None], 2)[:, :, 0]
    return pos, np.take_along_axis(ks, best[..., None], -1)[..., 0]


def fix_keypoints(inputs: np.ndarray, refined: np.ndarray, kinds: np.ndarray,
                  areas: np.ndarray, spec: KeypointSpec, opts: FixOptions) -> FixResult:
    """Output positions of one image's detections.

    Args:
        inputs: (N, K, 3) input keypoints ``x, y, v`` in image pixels (v > 0: present).
        refined: (N, K, 2) the network's keypoints (heatmap soft-argmax) in image pixels.
        kinds: (N, K, 5) probabilities of good, jitter, inversion, swap, miss.
        areas: (N,) the detections' areas (the KS scale).
        spec: the keypoint layout (partners, groups, sigmas).
        opts: the decisions' thresholds, with the gate set (:meth:`FixOptions.resolve`).
    """
    if opts.gate is None:
        raise ValueError("fix_keypoints: the options' gate is not set (FixOptions.resolve)")
    n, k = inputs.shape[:2]
    present = inputs[..., 2] > 0
    gross_kinds = kinds[..., list(GROSS)]
    touched = present & (gross_kinds.sum(-1) >= opts.gate)
    kind = np.asarray(GROSS)[gross_kinds.argmax(-1)]
    partner = spec.partner_index
    p = spec.flip_index  # the partner, or the keypoint itself where it has none
    exch = _exchange(kinds, present, spec, opts, touched, kind)
    coords = np.where(present[..., None], inputs[..., :2], refined).astype(np.float64)
    coords = np.where(exch[..., None], inputs[:, p, :2], coords)
    action = np.where(exch, INVERSION, 0).astype(np.int8)
    moved = touched & ~exch
    sigmas = spec.sigma_array
    snapped = np.zeros((n, k), dtype=bool)
    swap = moved & (kind == SWAP) & (opts.swap_ks > 0) & (n > 1)
    if swap.any():
        # the same joint of every other detection: candidates (N, K, N, 2)
        cand = np.broadcast_to(inputs[None, :, :, :2].transpose(0, 2, 1, 3), (n, k, n, 2))
        ok = present.T[None] & ~np.eye(n, dtype=bool)[:, None, :]
        pos, ks = _nearest_input(refined, cand, ok, areas, sigmas)
        take = swap & (ks >= opts.swap_ks)
        coords = np.where(take[..., None], pos, coords)
        action[take] = SWAP
        moved &= ~take
    coords = np.where(moved[..., None], refined, coords)
    action[moved] = MISS
    if opts.snap > 0 and moved.any():
        # the same and the partner joint of every detection, this one's own input included
        cand = np.concatenate([inputs[:, :, :2], inputs[:, p, :2]], 0)  # (2N, K, 2)
        ok = np.concatenate([present, present[:, p] & (partner >= 0)[None]], 0)
        cand = np.broadcast_to(cand.transpose(1, 0, 2)[None], (n, k, 2 * n, 2))
        ok = np.broadcast_to(ok.T[None], (n, k, 2 * n))
        pos, ks = _nearest_input(refined, cand, ok, areas, sigmas)
        snapped = moved & (ks >= opts.snap)
        coords = np.where(snapped[..., None], pos, coords)
    return FixResult(coords=coords, action=action, snapped=snapped)
