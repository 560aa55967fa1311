"""Keypoint layouts as data: names, flip pairs, OKS sigmas, skeleton, body groups.

Every algorithm in posefix takes a :class:`KeypointSpec`; nothing assumes 17 keypoints.
Built-in layouts live in ``posefix/specs/*.yaml``; a user passes their own file by path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .builtin import builtin_names, read_yaml

__all__ = ["KeypointSpec", "SpecError", "available_specs", "convert_layout", "load_spec"]

# Name aliases accepted by :func:`load_spec`.
_ALIASES = {
    "coco": "coco17",
    "ochuman": "ochuman17",
    "posetrack": "posetrack17",
    "posetrack18": "posetrack17",
    "crowdpose": "crowdpose14",
    "aic": "aic14",
    "mpii": "mpii16",
    "lsp": "lsp14",
    "parse": "parse14",
    "body_25": "body25",
    "openpose": "body25",
    "openpose_coco": "openpose18",
}


class SpecError(ValueError):
    """A keypoint spec file is malformed."""


@dataclass(frozen=True)
class KeypointSpec:
    """A keypoint layout.

    Attributes:
        name: short identifier, e.g. ``coco17``.
        keypoints: keypoint names in dataset order.
        flip_pairs: index pairs (i, j) swapped by a horizontal flip.
        sigmas: per-keypoint OKS sigmas.
        skeleton: index pairs (i, j) drawn as limbs.
        groups: body-group name -> keypoint indices (face, upper_body, lower_body, ...).
        ignore: indices of keypoints never labelled in this layout (excluded from
            training targets, evaluation and diagnosis).
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict, hash=False, compare=False)
    ignore: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if k == 0:
            raise SpecError(f"spec {self.name!r}: 'keypoints' is empty")
        if len(set(self.keypoints)) != k:
            raise SpecError(f"spec {self.name!r}: 'keypoints' has duplicate names")
        if len(self.sigmas) != k:
            raise SpecError(
                f"spec {self.name!r}: 'sigmas' has {len(self.sigmas)} values for {k} keypoints"
            )
        if any(not (s > 0) for s in self.sigmas):
            raise SpecError(f"spec {self.name!r}: 'sigmas' must all be positive")
        seen: set[int] = set()
        for i, j in self.flip_pairs:
            if i == j or i in seen or j in seen:
                raise SpecError(f"spec {self.name!r}: 'flip_pairs' reuses keypoint {i} or {j}")
            seen.update((i, j))
        for field_name, pairs in (("flip_pairs", self.flip_pairs), ("skeleton", self.skeleton)):
            for pair in pairs:
                if any(not 0 <= p < k for p in pair):
                    raise SpecError(f"spec {self.name!r}: '{field_name}' index out of range")
        if any(not 0 <= i < k for i in self.ignore):
            raise SpecError(f"spec {self.name!r}: 'ignore' index out of range")

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints K."""
        return len(self.keypoints)

    @cached_property
    def sigma_array(self) -> np.ndarray:
        """OKS sigmas as a float64 array of shape (K,)."""
        return np.asarray(self.sigmas, dtype=np.float64)

    @cached_property
    def flip_index(self) -> np.ndarray:
        """Permutation p such that ``flipped[..., p, :]`` swaps left and right keypoints."""
        perm = np.arange(self.num_keypoints)
        for i, j in self.flip_pairs:
            perm[i], perm[j] = j, i
        return perm

    @cached_property
    def partner_index(self) -> np.ndarray:
        """Left/right partner of each keypoint, or -1 where it has none, shape (K,)."""
        partner = np.full(self.num_keypoints, -1, dtype=np.int64)
        for i, j in self.flip_pairs:
            partner[i], partner[j] = j, i
        return partner

    @cached_property
    def used_mask(self) -> np.ndarray:
        """Boolean (K,) mask of keypoints that are labelled in this layout (not ignored)."""
        mask = np.ones(self.num_keypoints, dtype=bool)
        mask[list(self.ignore)] = False
        return mask

    @cached_property
    def group_of(self) -> tuple[str, ...]:
        """Body-group name of each keypoint ('other' where none is given)."""
        out = ["other"] * self.num_keypoints
        for g, idx in self.groups.items():
            for i in idx:
                out[i] = g
        return tuple(out)

    def index(self, name: str) -> int:
        """Index of a keypoint by name."""
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"spec {self.name!r} has no keypoint {name!r}") from None

    def mapping_from(self, other: KeypointSpec) -> np.ndarray:
        """For each of this spec's keypoints, its index in ``other`` by name, or -1."""
        pos = {n: i for i, n in enumerate(other.keypoints)}
        return np.array([pos.get(n, -1) for n in self.keypoints], dtype=np.int64)

    def to_dict(self) -> dict:
        """Plain-data form (names, not indices), the same shape as a spec file."""
        names = self.keypoints
        return {
            "name": self.name,
            "keypoints": list(names),
            "flip_pairs": [[names[i], names[j]] for i, j in self.flip_pairs],
            "sigmas": [float(s) for s in self.sigmas],
            "skeleton": [[names[i], names[j]] for i, j in self.skeleton],
            "groups": {g: [names[i] for i in idx] for g, idx in self.groups.items()},
            "ignore": [names[i] for i in self.ignore],
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> KeypointSpec:
        """Build a spec from plain data; pairs and groups may use names or indices."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: a keypoint spec must be a mapping")
        for key in ("name", "keypoints", "sigmas"):
            if key not in data:
                raise SpecError(f"{source}: missing field '{key}'")
        names = tuple(str(n) for n in data["keypoints"])
        pos = {n: i for i, n in enumerate(names)}

        def idx(v: object, where: str) -> int:
            if isinstance(v, str):
                if v not in pos:
                    raise SpecError(f"{source}: '{where}' names unknown keypoint {v!r}")
                return pos[v]
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            raise SpecError(f"{source}: '{where}' entries must be names or indices, got {v!r}")

        def pairs(key: str) -> tuple[tuple[int, int], ...]:
            out = []
            for p in data.get(key) or []:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise SpecError(f"{source}: '{key}' entries must be pairs, got {p!r}")
                out.append((idx(p[0], key), idx(p[1], key)))
            return tuple(out)

        try:
            sigmas = tuple(float(s) for s in data["sigmas"])
        except (TypeError, ValueError):
            raise SpecError(f"{source}: 'sigmas' must be a list of numbers") from None
        groups = {
            str(g): tuple(idx(v, f"groups.{g}") for v in members)
            for g, members in (data.get("groups") or {}).items()
        }
        flip_pairs, skeleton = pairs("flip_pairs"), pairs("skeleton")
        ignore = tuple(idx(v, "ignore") for v in data.get("ignore") or [])
        try:
            return cls(
                name=str(data["name"]),
                keypoints=names,
                flip_pairs=flip_pairs,
                sigmas=sigmas,
                skeleton=skeleton,
                groups=groups,
                ignore=ignore,
            )
        except SpecError as e:
            raise SpecError(f"{source}: {e}") from None


def convert_layout(keypoints: np.ndarray, source: KeypointSpec, target: KeypointSpec, *,
                   zero_ignored: bool) -> np.ndarray:
    """Keypoints (..., K_source, C) in ``target``'s layout, matched by name, as float64.

    Target keypoints the source lacks come out as zeros (absent, unlabelled), so PoseTrack's
    ``head_bottom``/``head_top`` never land on COCO's eyes. With ``zero_ignored`` the
    target's ignored keypoints (``target.ignore``) are zeroed too, as training labels want;
    without it they keep what the source has, as a pose file converted for refining wants.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    index = target.mapping_from(source)
    out = np.zeros((*kp.shape[:-2], target.num_keypoints, kp.shape[-1]))
    have = index >= 0
    out[..., have, :] = kp[..., index[have], :]
    if zero_ignored:
        out[..., ~target.used_mask, :] = 0.0
    return out


def available_specs() -> list[str]:
    """Names of the built-in keypoint specs."""
    return builtin_names("specs")


def load_spec(name_or_path: str | Path | KeypointSpec) -> KeypointSpec:
    """Load a built-in spec by name (``coco17``, ``crowdpose``...) or a spec file by path."""
    if isinstance(name_or_path, KeypointSpec):
        return name_or_path
    key = str(name_or_path)
    found = read_yaml(_ALIASES.get(key.lower(), key), "specs", "keypoint spec", SpecError)
    return KeypointSpec.from_dict(found.data, source=found.source)
