"""Error profiles: how often each keypoint error type is synthesized (paper section 4).

A profile gives, per joint group, per bin of a person's number of labelled keypoints and per
bin of its number of overlapping persons, the probability of each error type of
:mod:`posefix.taxonomy` (good, jitter, inversion, swap, miss). Keypoints are assigned to
groups *by name*, so one profile serves every keypoint layout that uses those names;
keypoints a profile does not name fall back to a group chosen by their spec body group.
The file format is documented at the top of ``posefix/profiles/default.yaml``.

:func:`fit_profile` measures a profile from an estimator's diagnosed errors, so that the
synthesized inputs a refiner trains on resemble that estimator's mistakes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .builtin import builtin_names, read_yaml
from .config import ConfigError
from .jsonfiles import atomic_write, write_json_atomic
from .spec import KeypointSpec
from .taxonomy import ABSENT, ERROR_TYPES, GOOD, INVERSION, MISS

__all__ = [
    "CORRELATED",
    "ErrorProfile",
    "ProfileError",
    "available_profiles",
    "correlated_events",
    "fit_profile",
    "load_profile",
    "save_profile",
]

_NT = len(ERROR_TYPES)
#: Kinds of correlated errors (:attr:`ErrorProfile.correlated`).
CORRELATED: tuple[str, ...] = ("person_inversion", "group_inversion", "limb_inversion",
                                "person_miss")
# A fitted profile counts a person as mirrored, or a body group as inverted, when at least
# this share of its labelled left/right pairs (and at least _MIN_PAIRS of them) is exchanged
# (both keypoints inversions), and a person as failed when this share of its labelled
# keypoints are misses: not all, since where an inversion cannot be made (hips close
# together) synthesis and real estimators alike leave a keypoint good or jitter.
_MOST = 0.75
_MIN_PAIRS = 2
# Types given in a file; good is the remainder.
_ERROR_ONLY = tuple(t for t in ERROR_TYPES if t != "good")


class ProfileError(ConfigError):
    """An error profile file is malformed (a :class:`ConfigError`, so the CLI reports it
    in one line)."""


@dataclass(frozen=True, eq=False)
class ErrorProfile:
    """Error-type probabilities by joint group, labelled-count bin and overlap bin.

    Attributes:
        name: short identifier.
        labelled_bins: inclusive upper edges of the labelled-keypoint-count bins; one more
            bin holds every larger count (L = len + 1 bins).
        overlap_bins: inclusive upper edges of the overlapping-person-count bins (O bins).
        group_names: the G joint groups, in the order of ``rates``.
        group_keypoints: keypoint names of each group.
        rates: (G, L, O, 5) probabilities in taxonomy code order, summing to 1.
        fallback: spec body group (face, upper_body, ...) -> profile group, for keypoints
            no group names.
        default_group: group for keypoints that neither names nor fallback place.
        description: free text.
        samples: (G, L, O) number of keypoints each bin was measured on (fitted profiles),
            or None.
        correlated: probabilities of errors that real estimators make for several keypoints
            at once (a posefix extension; all 0 in the paper's profile): ``person_inversion``
            (per person: every keypoint with a labelled left/right partner is inverted, a
            person mistaken for its mirror image), ``group_inversion`` (per person and spec
            body group: the group's left/right keypoints inverted together, e.g. crossed
            legs), ``limb_inversion`` (per person and limb of ``limbs``: one side's limb,
            chosen at random, put onto the other side's limb, which stays right, e.g. both
            arms on one arm; the moved keypoints land within KS 0.85 of their partners,
            where an estimator that localizes the other limb puts them), ``person_miss`` (per person: every keypoint a miss, an estimator that
            failed on the person). The chosen keypoints take that type where it can be made,
            else a type drawn from the per-keypoint rates.
        limbs: keypoint names of each limb, one side of it (``left_elbow, left_wrist``);
            the other side is the spec's left/right partners. Limbs a layout lacks a
            keypoint or partner of are skipped. Needed where ``limb_inversion`` > 0.
        inversion_on_partner: the share of inversions drawn within KS 0.85 of the partner
            (on the partner's joint, as a confident estimator's mirrored keypoint sits)
            rather than anywhere within KS 0.5 of it (the paper's draw, the default 0).
    """

    name: str
    labelled_bins: tuple[int, ...]
    overlap_bins: tuple[int, ...]
    group_names: tuple[str, ...]
    group_keypoints: tuple[tuple[str, ...], ...]
    rates: np.ndarray
    fallback: dict[str, str] = field(default_factory=dict)
    default_group: str = ""
    description: str = ""
    samples: np.ndarray | None = None
    correlated: dict[str, float] = field(default_factory=dict)
    limbs: tuple[tuple[str, ...], ...] = ()
    inversion_on_partner: float = 0.0
    _groups_of: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            _check_bins(self)
            object.__setattr__(self, "rates", _checked_rates(self))
            _check_groups(self)
            object.__setattr__(self, "correlated", _checked_correlated(self.correlated))
            object.__setattr__(self, "limbs", _checked_limbs(self.limbs, self.correlated))
            object.__setattr__(self, "inversion_on_partner", _checked_probability(
                self.inversion_on_partner, "inversion_on_partner"))
            if self.samples is not None:
                object.__setattr__(self, "samples", _checked_samples(self))
        except ProfileError as e:
            raise ProfileError(f"profile {self.name!r}: {e}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ErrorProfile):
            return NotImplemented
        return (self.name == other.name and self.labelled_bins == other.labelled_bins
                and self.overlap_bins == other.overlap_bins
                and self.group_names == other.group_names
                and self.group_keypoints == other.group_keypoints
                and self.fallback == other.fallback and self.default_group == other.default_group
                and self.correlated == other.correlated and self.limbs == other.limbs
                and self.inversion_on_partner == other.inversion_on_partner
                and np.array_equal(self.rates, other.rates))

    __hash__ = None  # type: ignore[assignment]

    @property
    def num_bins(self) -> tuple[int, int]:
        """(L, O): number of labelled-count and overlap bins."""
        return len(self.labelled_bins) + 1, len(self.overlap_bins) + 1

    def group_index(self, spec: KeypointSpec) -> np.ndarray:
        """Profile group of each of the spec's keypoints, (K,) indices into ``group_names``."""
        key = (spec.keypoints, spec.group_of)
        cached = self._groups_of.get(key)
        if cached is not None:
            return cached
        by_name = {n: g for g, names in enumerate(self.group_keypoints) for n in names}
        pos = {g: i for i, g in enumerate(self.group_names)}
        default = pos[self.default_group]
        out = [by_name.get(n, pos.get(self.fallback.get(body, ""), default))
               for n, body in zip(spec.keypoints, spec.group_of, strict=True)]
        index = np.asarray(out, dtype=np.int64)
        index.setflags(write=False)
        self._groups_of[key] = index
        return index

    def limb_index(self, spec: KeypointSpec) -> tuple[np.ndarray, np.ndarray]:
        """``(side, other)``: (B, J) keypoint indices of the B limbs of ``limbs`` the spec
        has (every keypoint used, with a partner), and their partners; J the longest limb,
        shorter limbs padded with -1."""
        pos = {n: i for i, n in enumerate(spec.keypoints)}
        partner = spec.partner_index
        found = []
        for names in self.limbs:
            idx = [pos.get(n, -1) for n in names]
            if all(i >= 0 and partner[i] >= 0 and spec.used_mask[i] for i in idx):
                found.append(idx)
        width = max((len(i) for i in found), default=0)
        side = np.full((len(found), width), -1, dtype=np.int64)
        for b, idx in enumerate(found):
            side[b, :len(idx)] = idx
        other = np.where(side >= 0, partner[np.maximum(side, 0)], -1)
        return side, other

    def labelled_bin(self, num_labelled: np.ndarray) -> np.ndarray:
        """Bin index of each labelled-keypoint count."""
        return np.searchsorted(np.asarray(self.labelled_bins), np.asarray(num_labelled),
                               side="left")

    def overlap_bin(self, num_overlap: np.ndarray) -> np.ndarray:
        """Bin index of each overlapping-person count."""
        return np.searchsorted(np.asarray(self.overlap_bins), np.asarray(num_overlap),
                               side="left")

    def probabilities(self, spec: KeypointSpec, num_labelled: np.ndarray,
                      num_overlap: np.ndarray) -> np.ndarray:
        """Type probabilities (N, K, 5) in taxonomy order for N persons of layout ``spec``.

        Keypoints the spec ignores get all-zero rows (they are never synthesized).
        """
        g = self.group_index(spec)
        lb = self.labelled_bin(np.asarray(num_labelled).reshape(-1))
        ob = self.overlap_bin(np.asarray(num_overlap).reshape(-1))
        out = self.rates[g[None, :], lb[:, None], ob[:, None]]
        return out * spec.used_mask[None, :, None]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, the shape of a profile file (``good`` left implicit)."""
        groups: dict[str, Any] = {}
        for gi, (g, names) in enumerate(zip(self.group_names, self.group_keypoints,
                                            strict=True)):
            entry: dict[str, Any] = {"keypoints": list(names)}
            for t in _ERROR_ONLY:
                entry[t] = _compact(self.rates[gi, :, :, ERROR_TYPES.index(t)])
            if self.samples is not None:
                entry["samples"] = self.samples[gi].tolist()
            groups[g] = entry
        out = {
            "name": self.name,
            "description": self.description,
            "labelled_bins": list(self.labelled_bins),
            "overlap_bins": list(self.overlap_bins),
            "groups": groups,
            "fallback": dict(self.fallback),
            "default_group": self.default_group,
        }
        if any(self.correlated.values()):
            out["correlated"] = dict(self.correlated)
        if self.limbs:
            out["limbs"] = [list(names) for names in self.limbs]
        if self.inversion_on_partner:
            out["inversion_on_partner"] = self.inversion_on_partner
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> ErrorProfile:
        """Build a profile from plain data (the parsed file); errors name source and field.

        This only parses (shapes of the file's fields, numbers, ``good`` as the remainder);
        every rule on the values is checked once, by the constructor.
        """
        try:
            if not isinstance(data, dict):
                raise ProfileError("an error profile must be a mapping")
            for key in ("name", "labelled_bins", "overlap_bins", "groups"):
                if key not in data:
                    raise ProfileError(f"missing field '{key}'")
            labelled, overlap = (tuple(data[k]) if isinstance(data[k], list) else data[k]
                                 for k in ("labelled_bins", "overlap_bins"))
            shape = (len(labelled) + 1 if isinstance(labelled, tuple) else 1,
                     len(overlap) + 1 if isinstance(overlap, tuple) else 1)
            names, members, rates, samples = _parse_groups(data["groups"], shape)
            limbs = data.get("limbs") or []
            if not isinstance(limbs, list) or not all(
                    isinstance(lb, list) and all(isinstance(n, str) for n in lb) for lb in limbs):
                raise ProfileError("field 'limbs' must be a list of lists of keypoint names")
            fallback = data.get("fallback") or {}
            if not isinstance(fallback, dict):
                raise ProfileError("field 'fallback' must be a mapping")
            return cls(
                name=str(data["name"]),
                labelled_bins=labelled,
                overlap_bins=overlap,
                group_names=names,
                group_keypoints=members,
                rates=rates,
                fallback={str(k): str(v) for k, v in fallback.items()},
                default_group=str(data.get("default_group") or names[0]),
                description=str(data.get("description") or ""),
                samples=samples,
                correlated=data.get("correlated") or {},
                limbs=tuple(tuple(lb) for lb in limbs),
                inversion_on_partner=data.get("inversion_on_partner") or 0.0,
            )
        except ProfileError as e:
            raise ProfileError(f"{source}: {e}") from None


def _check_bins(p: ErrorProfile) -> None:
    for key in ("labelled_bins", "overlap_bins"):
        edges = getattr(p, key)
        if not isinstance(edges, tuple) or any(
                isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0
                for b in edges) or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
            raise ProfileError(f"field '{key}' must be increasing non-negative integers, got "
                               f"{list(edges) if isinstance(edges, tuple) else edges!r}")


def _checked_rates(p: ErrorProfile) -> np.ndarray:
    G, (L, NO) = len(p.group_names), p.num_bins
    if G == 0:
        raise ProfileError("no groups")
    rates = np.asarray(p.rates, dtype=np.float64)
    if rates.shape != (G, L, NO, _NT):
        raise ProfileError(f"rates have shape {rates.shape}, expected {(G, L, NO, _NT)}")
    if not np.all(np.isfinite(rates)):
        raise ProfileError("probabilities must be finite")
    low = rates.min(-1)
    if low.min() < -1e-9:
        g, li, o = np.unravel_index(low.argmin(), low.shape)
        raise ProfileError(f"field 'groups.{p.group_names[g]}': error probabilities sum to "
                           f"more than 1 in bin ({li}, {o})")
    sums = rates.sum(-1)
    if np.abs(sums - 1).max() > 1e-6:
        g, li, o = np.unravel_index(np.abs(sums - 1).argmax(), sums.shape)
        raise ProfileError(f"field 'groups.{p.group_names[g]}': the five probabilities must "
                           f"sum to 1 (bin ({li}, {o}) sums to {sums[g, li, o]:.6f})")
    rates = np.clip(rates, 0, None)
    rates.setflags(write=False)
    return rates


def _check_groups(p: ErrorProfile) -> None:
    if len(p.group_keypoints) != len(p.group_names):
        raise ProfileError(f"{len(p.group_keypoints)} keypoint lists for "
                           f"{len(p.group_names)} groups")
    seen: dict[str, str] = {}
    for g, names in zip(p.group_names, p.group_keypoints, strict=True):
        for n in names:
            if n in seen:
                raise ProfileError(f"keypoint {n!r} is in groups {seen[n]!r} and {g!r}")
            seen[n] = g
    for field_name, target in [*((f"fallback.{k}", v) for k, v in p.fallback.items()),
                               ("default_group", p.default_group)]:
        if target not in p.group_names:
            raise ProfileError(f"field '{field_name}' names unknown group {target!r}; "
                               f"expected one of {list(p.group_names)}")


def _checked_correlated(correlated: Any) -> dict[str, float]:
    if not isinstance(correlated, dict):
        raise ProfileError("field 'correlated' must be a mapping")
    unknown = set(correlated) - set(CORRELATED)
    if unknown:
        raise ProfileError(f"'correlated' has unknown key(s) {sorted(unknown)}; expected "
                           f"{', '.join(CORRELATED)}")
    for key, value in correlated.items():
        _checked_probability(value, f"correlated.{key}")
    return {k: float(correlated.get(k, 0.0)) for k in CORRELATED}


def _checked_probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ProfileError(f"'{where}' must be a probability, got {value!r}")
    return float(value)


def _checked_limbs(limbs: Any, correlated: dict[str, float]) -> tuple[tuple[str, ...], ...]:
    out = tuple(tuple(str(n) for n in lb) for lb in limbs)
    names = [n for lb in out for n in lb]
    if any(not lb for lb in out) or len(set(names)) != len(names):
        raise ProfileError("field 'limbs' must list non-empty limbs, each keypoint once")
    if correlated.get("limb_inversion", 0.0) > 0 and not out:
        raise ProfileError("'correlated.limb_inversion' needs the limbs (field 'limbs')")
    return out


def _checked_samples(p: ErrorProfile) -> np.ndarray:
    s = np.asarray(p.samples, dtype=np.int64)
    expected = (len(p.group_names), *p.num_bins)
    if s.shape != expected:
        raise ProfileError(f"samples have shape {s.shape}, expected {expected}")
    return s


def _parse_groups(groups: Any, shape: tuple[int, int]) -> tuple[
        tuple[str, ...], tuple[tuple[str, ...], ...], np.ndarray, np.ndarray | None]:
    """A file's ``groups``: names, keypoint names, (G, L, O, 5) rates and samples."""
    if not isinstance(groups, dict) or not groups:
        raise ProfileError("field 'groups' must be a non-empty mapping")
    has_samples = all(isinstance(e, dict) and "samples" in e for e in groups.values())
    names, members, rates, samples = [], [], [], []
    for g, entry in groups.items():
        where = f"groups.{g}"
        if not isinstance(entry, dict):
            raise ProfileError(f"field '{where}' must be a mapping")
        kps = entry.get("keypoints", [])
        if not isinstance(kps, list) or not all(isinstance(k, str) for k in kps):
            raise ProfileError(f"field '{where}.keypoints' must be a list of keypoint names")
        unknown = set(entry) - {"keypoints", "samples", *ERROR_TYPES}
        if unknown:
            raise ProfileError(f"field '{where}' has unknown key(s) {sorted(unknown)}; "
                               f"expected keypoints, {', '.join(ERROR_TYPES)}")
        r = np.zeros((*shape, _NT))
        for ti, t in enumerate(ERROR_TYPES):
            if t in entry:
                r[..., ti] = _table(entry[t], *shape, f"{where}.{t}")
        if "good" not in entry:
            r[..., GOOD] = 1.0 - r.sum(-1)
        elif np.abs(r.sum(-1) - 1).max() <= 1e-3:  # a file's rounding
            r /= r.sum(-1, keepdims=True)
        names.append(str(g))
        members.append(tuple(kps))
        rates.append(r)
        if has_samples:
            samples.append(_table(entry["samples"], *shape, f"{where}.samples"))
    stacked = np.stack(samples).round().astype(np.int64) if has_samples else None
    return tuple(names), tuple(members), np.stack(rates), stacked


def _table(value: Any, L: int, NO: int, where: str) -> np.ndarray:
    """A scalar, per-labelled-bin list or [labelled][overlap] table, broadcast to (L, O)."""
    def bad(msg: str) -> ProfileError:
        return ProfileError(f"field '{where}': {msg}")

    def num(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(f"{v!r} is not a finite number")
        if v < 0:
            raise bad(f"{v} is negative")
        return float(v)

    if not isinstance(value, list):
        return np.full((L, NO), num(value))
    if len(value) != L:
        raise bad(f"has {len(value)} entries; there are {L} labelled bins")
    out = np.zeros((L, NO))
    for i, row in enumerate(value):
        if isinstance(row, list):
            if len(row) != NO:
                raise bad(f"row {i} has {len(row)} entries; there are {NO} overlap bins")
            out[i] = [num(v) for v in row]
        else:
            out[i] = num(row)
    return out


def _compact(table: np.ndarray) -> Any:
    """The shortest file form of an (L, O) table: a number, a list or a list of lists."""
    t = np.round(np.asarray(table, dtype=np.float64), 6)
    if np.all(t == t.flat[0]):
        return float(t.flat[0])
    if np.all(t == t[:, :1]):
        return [float(v) for v in t[:, 0]]
    return [[float(v) for v in row] for row in t]


def available_profiles() -> list[str]:
    """Names of the built-in profiles (``posefix/profiles/*.yaml``)."""
    return builtin_names("profiles")


def load_profile(name_or_path: str | Path | ErrorProfile) -> ErrorProfile:
    """Load a built-in profile by name (``default``) or a profile file (YAML or JSON)."""
    if isinstance(name_or_path, ErrorProfile):
        return name_or_path
    found = read_yaml(name_or_path, "profiles", "error profile", ProfileError)
    return ErrorProfile.from_dict(found.data, source=found.source)


def save_profile(profile: ErrorProfile, path: str | Path) -> Path:
    """Write a profile file atomically (YAML; JSON if ``path`` ends in ``.json``)."""
    path = Path(path)
    data = profile.to_dict()
    if path.suffix.lower() == ".json":
        return write_json_atomic(path, data, indent=1)
    header = ("# posefix error profile (format: see posefix/profiles/default.yaml). Rates "
              "are\n# probabilities of each error type; good = 1 - the others.\n")
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    return atomic_write(path, lambda f: f.write(text))


# --------------------------------------------------------------------------- fitting
def _choice_mle(counts: np.ndarray, fixed: np.ndarray, iters: int = 200) -> np.ndarray:
    """Rates of a choice model whose unavailable types are dropped and the rest renormalized.

    ``counts`` is (..., A, 5): for each availability pattern a (see ``_PATTERNS``), how
    many keypoints showed each type. Returns (..., 5) rates p maximizing the likelihood of
    P(type t | pattern a) = p_t / sum of p over the types available in a (Luce's choice
    model, fitted by the minorize-maximize iteration). Types never available in a cell are
    unidentifiable: they keep ``fixed`` (..., 5) and the others share the rest.
    """
    avail = _PATTERNS  # (A, 5)
    n = counts.sum(-1)  # (..., A)
    c = counts.sum(-2)  # (..., 5)
    exposure = (n[..., :, None] * avail).sum(-2)  # (..., 5)
    free = exposure > 0
    budget = 1.0 - np.where(free, 0.0, fixed).sum(-1, keepdims=True)
    p = np.where(free, 1.0, 0.0)
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-12) * budget
    for _ in range(iters):
        z = (p[..., None, :] * avail).sum(-1)  # (..., A)
        denom = (n[..., :, None] * avail / np.maximum(z[..., :, None], 1e-12)).sum(-2)
        new = np.where(free, c / np.maximum(denom, 1e-12), 0.0)
        s = new.sum(-1, keepdims=True)
        new = np.where(s > 0, new / np.maximum(s, 1e-12) * budget, p)
        if np.abs(new - p).max() < 1e-10:
            p = new
            break
        p = new
    return np.where(free, p, fixed)


# Availability patterns: good, jitter and miss are always possible; inversion needs a
# labelled left/right partner, swap an overlapping labelled person.
_PATTERNS = np.array([
    [1, 1, 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, 1, 0, 1, 1],
    [1, 1, 1, 1, 1],
], dtype=np.float64)


def fit_profile(
    labels: np.ndarray,
    num_labelled: np.ndarray,
    num_overlap: np.ndarray,
    spec: KeypointSpec,
    min_count: int = 50,
    base: ErrorProfile | str = "default",
    swap_possible: np.ndarray | None = None,
    name: str = "fitted",
) -> ErrorProfile:
    """Measure an estimator's error profile from its diagnosed keypoint errors.

    Args:
        labels: (P, K) taxonomy codes of P matched persons (ABSENT where unlabelled).
        num_labelled: (P,) labelled keypoints of each person's ground truth.
        num_overlap: (P,) other labelled persons whose box overlaps (IoU >= 0.1).
        spec: the keypoint layout of ``labels``.
        min_count: a (group, labelled bin, overlap bin) cell measured on fewer keypoints
            falls back to the cell pooled over overlap bins, then over labelled bins, then
            over both, then to ``base``.
        base: profile giving the groups, bins and fallback values.
        swap_possible: optional (P, K) mask of keypoints that had another person's same or
            partner keypoint to be swapped with; by default every keypoint of a person with
            an overlapping person.
        name: name of the fitted profile.

    Rates are those of *choosing* each type, as synthesis uses them: an inversion can only
    be observed where the left/right partner is labelled and a swap where another person
    overlaps, so those keypoints' frequencies are corrected for the types they could not
    show (a Luce choice model fitted by maximum likelihood). Where a type can never occur
    in a cell (a swap with no overlapping person) its rate stays the base's.

    The correlated rates (:attr:`ErrorProfile.correlated`, with ``base``'s limbs) are
    measured too, as shares of the persons, groups and limbs that could show them (see
    :func:`correlated_events`; a kind no person could show keeps ``base``'s rate), and the
    keypoints such an event explains are left out of the per-keypoint rates, which
    synthesis draws for the other keypoints. ``inversion_on_partner`` (a position, not a
    type: labels do not show it) is ``base``'s.
    """
    base = load_profile(base)
    labels = np.asarray(labels)
    P, K = labels.shape
    if K != spec.num_keypoints:
        raise ValueError(f"labels have {K} keypoints; spec {spec.name} has {spec.num_keypoints}")
    nl = np.asarray(num_labelled).reshape(P)
    no = np.asarray(num_overlap).reshape(P)
    events, exposure, explained = correlated_events(labels, spec, base)
    correlated = {k: events[k] / exposure[k] if exposure[k] else base.correlated[k]
                  for k in CORRELATED}
    counts = _choice_counts(np.where(explained, ABSENT, labels), nl, no, spec, base,
                            swap_possible)
    rates = _pooled_rates(counts, base.rates, min_count)
    return ErrorProfile(
        name=name,
        labelled_bins=base.labelled_bins,
        overlap_bins=base.overlap_bins,
        group_names=base.group_names,
        group_keypoints=base.group_keypoints,
        rates=rates,
        fallback=dict(base.fallback),
        default_group=base.default_group,
        description=(f"fitted on {P} persons ({int(counts.sum())} labelled keypoints) of "
                     f"layout {spec.name}; cells with fewer than {min_count} keypoints pooled "
                     f"or taken from profile {base.name!r}"),
        samples=counts.sum((-1, -2)).round().astype(np.int64),
        correlated=correlated,
        limbs=base.limbs,
        inversion_on_partner=base.inversion_on_partner,
    )


def correlated_events(labels: np.ndarray, spec: KeypointSpec, profile: ErrorProfile,
                      ) -> tuple[dict[str, int], dict[str, int], np.ndarray]:
    """Count the correlated errors of diagnosed keypoint labels (P, K).

    A person with 4 or more labelled keypoints is *failed* (``person_miss``) when at least
    3/4 of them are misses. Of the others, one with 2 or more labelled left/right pairs is
    *mirrored* (``person_inversion``) when at least 3/4 of them are exchanged (both
    keypoints inversions); else each spec body group with 2 or more labelled pairs is
    inverted (``group_inversion``) by the same rule on its pairs; a limb of
    ``profile.limbs`` labelled on both sides, in a group none of these took, is collapsed
    (``limb_inversion``) when every keypoint of one side is an inversion and none of the
    other side's is. Returns ``(events, exposure, explained)``: per kind, the events and the
    persons / groups / limbs that could show one; and the (P, K) keypoints the events
    explain (a failed person's, a mirrored person's or inverted group's paired keypoints,
    a collapsed limb's moved side).
    """
    labels = np.asarray(labels)
    P, K = labels.shape
    lab = (labels != ABSENT) & spec.used_mask[None]
    inv = labels == INVERSION
    partner = spec.partner_index
    paired = lab & (partner >= 0)[None] & lab[:, np.maximum(partner, 0)]
    exch = paired & inv & inv[:, np.maximum(partner, 0)]
    nl = lab.sum(1)
    failed = (nl >= 2 * _MIN_PAIRS) & ((labels == MISS).sum(1) >= _MOST * nl)
    # Counted per keypoint, pairs count twice: _MIN_PAIRS pairs are 2 * _MIN_PAIRS keypoints.
    person_open = (paired.sum(1) >= 2 * _MIN_PAIRS) & ~failed
    mirrored = person_open & (exch.sum(1) >= _MOST * paired.sum(1))
    open_ = ~failed & ~mirrored
    groups = list(spec.groups.values())
    member = np.zeros((len(groups) + 1, K), dtype=bool)  # the last row: no group
    for g, idx in enumerate(groups):
        member[g, list(idx)] = True
    member[-1] = ~member[:-1].any(0)
    n_pairs = paired.astype(np.int64) @ member[:-1].T  # P, G (keypoints)
    g_open = (n_pairs >= 2 * _MIN_PAIRS) & open_[:, None]
    g_inv = g_open & ((exch.astype(np.int64) @ member[:-1].T) >= _MOST * n_pairs)
    explained = np.zeros((P, K), dtype=bool)
    explained[failed] = lab[failed]
    explained[mirrored] = paired[mirrored]
    explained |= paired & (g_inv.astype(np.int64) @ member[:-1] > 0)
    g_taken = np.concatenate([g_inv, np.zeros((P, 1), dtype=bool)], 1)
    limb_events = limb_exposed = 0
    for a, b in zip(*profile.limb_index(spec), strict=True):
        a, b = a[a >= 0], b[b >= 0]
        group = int(member[:, a[0]].argmax())
        full = lab[:, a].all(1) & lab[:, b].all(1) & open_ & ~g_taken[:, group]
        for moved, stays in ((a, b), (b, a)):
            hit = full & inv[:, moved].all(1) & ~inv[:, stays].any(1)
            explained[np.ix_(hit, moved)] = True
            limb_events += int(hit.sum())
        limb_exposed += int(full.sum())
    events = {"person_miss": int(failed.sum()), "person_inversion": int(mirrored.sum()),
              "group_inversion": int(g_inv.sum()), "limb_inversion": limb_events}
    exposure = {"person_miss": int((nl >= 2 * _MIN_PAIRS).sum()),
                "person_inversion": int(person_open.sum()),
                "group_inversion": int(g_open.sum()), "limb_inversion": limb_exposed}
    return events, exposure, explained


def _choice_counts(labels: np.ndarray, nl: np.ndarray, no: np.ndarray, spec: KeypointSpec,
                   base: ErrorProfile, swap_possible: np.ndarray | None) -> np.ndarray:
    """(G, L, O, 4, 5) keypoint counts by profile cell, availability pattern and type."""
    P, K = labels.shape
    G, (L, NO) = len(base.group_names), base.num_bins
    partner = spec.partner_index
    has_partner = partner >= 0
    partner_lab = np.zeros((P, K), dtype=bool)
    partner_lab[:, has_partner] = labels[:, partner[has_partner]] != ABSENT
    if swap_possible is None:
        swap_ok = np.broadcast_to((no > 0)[:, None], (P, K))
    else:
        swap_ok = np.asarray(swap_possible, dtype=bool).reshape(P, K) & (no > 0)[:, None]
    pattern = partner_lab.astype(np.int64) + 2 * swap_ok.astype(np.int64)
    keep = (labels >= 0) & (labels < _NT) & spec.used_mask[None, :]
    cell = (np.broadcast_to(base.group_index(spec)[None, :], (P, K)) * L
            + base.labelled_bin(nl)[:, None]) * NO + base.overlap_bin(no)[:, None]
    flat = ((cell * 4 + pattern) * _NT + np.where(keep, labels, 0))[keep]
    counts = np.bincount(flat, minlength=G * L * NO * 4 * _NT)
    return counts.reshape(G, L, NO, 4, _NT).astype(np.float64)


def _pooled_rates(counts: np.ndarray, fixed: np.ndarray, min_count: int) -> np.ndarray:
    """Rates per cell from the finest pool with ``min_count`` keypoints, else ``fixed``."""
    pools = [  # finest to coarsest, each broadcast back to (G, L, O, 4, 5)
        counts,
        np.broadcast_to(counts.sum(2, keepdims=True), counts.shape),
        np.broadcast_to(counts.sum(1, keepdims=True), counts.shape),
        np.broadcast_to(counts.sum((1, 2), keepdims=True), counts.shape),
    ]
    rates = np.array(fixed, dtype=np.float64, copy=True)
    done = np.zeros(counts.shape[:3], dtype=bool)
    for pool in pools:
        enough = (pool.sum((-1, -2)) >= max(min_count, 1)) & ~done
        if enough.any():
            rates[enough] = _choice_mle(pool[enough], fixed[enough])
            done |= enough
    rates = np.clip(rates, 0, None)
    return rates / rates.sum(-1, keepdims=True)
