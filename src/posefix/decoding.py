"""How a refiner's network outputs become keypoints and person scores: one typed
:class:`Decoding`, owned by the :class:`~posefix.refiner.Refiner` and kept apart from the
network, as mmpose keeps its codecs apart from its models.

The network (:class:`~posefix.model.PoseFixNet`, or its ONNX export) gives, per crop, the
soft-argmax of each heatmap, its confidence and, with an error head, the probability that
each *input* keypoint is a gross error. A :class:`Decoding` then says:

* **gate**: keep every present input keypoint whose error probability is below it (P ==
  gate refines; None: refine every keypoint);
* **steps**: how far each kept keypoint moves towards the network's, per keypoint (None:
  kept exactly);
* **hold_below**: keep a present input keypoint exactly where the heatmap's confidence is
  below this (no evidence to move; None: never);
* **hold_above_shrink**: keep every present input keypoint of a person whose crop shrinks
  the image by more than this factor (the network sees the person coarser than the
  estimator did; None: never);
* **flip**: average with the prediction on the mirrored crop (the flip test);
* **score**: the output person score (:data:`SCORES`);
* **nms**: the OKS-NMS threshold per image (0: off).

Gate, steps and hold are applied per pass, before the flip fusion
(:meth:`Decoding.place`), exactly as the network applied them when they were part of it:
old checkpoints decode as before. A checkpoint's training config gives its decoding
(:meth:`Decoding.from_model_config`: ``model.error_gate``, ``model.error_blend[_keypoints]``,
``model.move_min_confidence``, ``model.move_max_shrink``); an ONNX export carries it as metadata
(:meth:`Decoding.to_json`). Numpy only: no torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = ["SCORES", "DEFAULT_SCORE", "Decoding"]

#: Output person scores (see :class:`Decoding`).
SCORES = ("auto", "input", "heatmap", "quality")
#: Output person score unless told otherwise: ``quality`` for a network with an error head
#: (the shipped demo model: it measured the higher AP on every input of the LSP test split,
#: recipes/demo/README.md), else the input's score (rescoring by heatmap confidence never won
#: on held-out images, ``python benchmarks/bench_refine.py --compare-scores CKPT``).
DEFAULT_SCORE = "auto"


@dataclass(frozen=True)
class Decoding:
    """Network outputs -> keypoints and scores (see the module's docstring).

    Attributes:
        gate: keep each present input keypoint whose probability of being a gross error is
            below this, in (0, 1] (needs an error head); None: refine every keypoint.
        steps: per keypoint (or one for all), how far a kept keypoint moves towards the
            network's, each in [0, 1]; None: kept exactly.
        hold_below: keep a present input keypoint exactly where the heatmap's confidence
            is below this, in [0, 1]; None: never.
        hold_above_shrink: keep every present input keypoint of a person whose crop
            shrinks the image by more than this factor (image pixels per crop pixel: the
            square root of the crop's area in the image over the network's input area),
            > 0; None: never.
        flip: the flip test.
        score: the output person score, one of :data:`SCORES`: ``"input"`` keeps the input
            person score; ``"heatmap"`` multiplies it by the mean keypoint confidence of the
            refined pose; ``"quality"`` (needs an error head) by the mean probability that
            the input keypoints are right; ``"auto"``: ``quality`` where the network has an
            error head, else ``input``.
        nms: OKS-NMS threshold per image, in [0, 1]; 0 turns it off.
    """

    gate: float | None = None
    steps: tuple[float, ...] | None = None
    hold_below: float | None = None
    hold_above_shrink: float | None = None
    flip: bool = True
    score: str = DEFAULT_SCORE
    nms: float = 0.9

    def __post_init__(self) -> None:
        if self.gate is not None and not 0 < self.gate <= 1:
            raise ValueError(f"decoding gate must be in (0, 1] or None, got {self.gate!r}")
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
            if not self.steps or any(not 0 <= s <= 1 for s in self.steps):
                raise ValueError(f"decoding steps must be in [0, 1], got {self.steps!r}")
        if self.hold_below is not None and not 0 <= self.hold_below <= 1:
            raise ValueError(f"decoding hold_below must be in [0, 1] or None, got "
                             f"{self.hold_below!r}")
        if self.hold_above_shrink is not None and not self.hold_above_shrink > 0:
            raise ValueError(f"decoding hold_above_shrink must be positive or None, got "
                             f"{self.hold_above_shrink!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if not 0 <= self.nms <= 1:
            raise ValueError(f"nms must be in [0, 1], got {self.nms!r}")

    @classmethod
    def from_model_config(cls, model: Any, names: Sequence[str] | None = None) -> Decoding:
        """A checkpoint's decoding: its ``model.error_gate``, ``error_blend`` (per keypoint
        ``error_blend_keypoints``; ``names``: the keypoints in the network's order) and
        ``move_min_confidence`` and ``move_max_shrink`` (a
        :class:`~posefix.config.ModelConfig`)."""
        return cls(gate=model.error_gate or None, steps=model.blend_weights(names),
                   hold_below=model.move_min_confidence,
                   hold_above_shrink=model.move_max_shrink)

    def with_gate(self, gate: float | None = None, step: float | None = None) -> Decoding:
        """This decoding with another gate (0: refine every keypoint) and/or one step for
        every keypoint (0: keep kept keypoints exactly); None leaves either as it is
        (``posefix refine --error-gate/--error-blend``)."""
        out = self
        if gate is not None:
            out = replace(out, gate=float(gate) or None)
        if step is not None:
            out = replace(out, steps=(float(step),) if step else None)
        return out

    def changed(self, *, flip: bool | None = None, score: str | None = None,
                nms: float | None = None) -> Decoding:
        """This decoding with the flip test, score or NMS threshold given (None: as is;
        ``nms`` <= 0 turns NMS off)."""
        given: dict[str, Any] = {}
        if flip is not None:
            given["flip"] = bool(flip)
        if score is not None:
            given["score"] = score
        if nms is not None:
            given["nms"] = max(float(nms), 0.0)
        return replace(self, **given) if given else self

    def place(self, coords: np.ndarray, confidence: np.ndarray, error: np.ndarray | None,
              input_pose: np.ndarray, shrink: np.ndarray | None = None) -> np.ndarray:
        """One pass's keypoints (B, K, 2) in crop pixels: the network's ``coords`` where it
        refines, else the input's (or a step towards the network's). ``confidence`` (B, K)
        and ``error`` (B, K, the error head's probabilities, None without one) are the
        pass's; ``input_pose`` (B, K, 3) the pose it was given; ``shrink`` (B,) how much
        each crop shrinks the image (for :attr:`hold_above_shrink`; None: unknown, no
        hold). Computed in float32, the network's own precision, so that the result is the
        one the network gave when it applied the gate itself."""
        out = np.asarray(coords, dtype=np.float32)
        pose = np.asarray(input_pose, dtype=np.float32)
        present = pose[..., 2] > 0
        if self.gate is not None:
            if error is None:
                raise ValueError("decoding gate: this network has no error head")
            keep = (np.asarray(error, dtype=np.float32) < np.float32(self.gate)) & present
            kept = pose[..., :2]
            if self.steps is not None:
                step = np.asarray(self.steps, dtype=np.float32).reshape(-1, 1)
                kept = kept + step * (out - kept)
            out = np.where(keep[..., None], kept, out)
        hold = np.zeros_like(present)
        if self.hold_below is not None:  # no evidence to move
            hold |= np.asarray(confidence, dtype=np.float32) < np.float32(self.hold_below)
        if self.hold_above_shrink is not None and shrink is not None:  # seen too coarse
            hold |= (np.asarray(shrink, dtype=np.float64) > self.hold_above_shrink)[:, None]
        return np.where((hold & present)[..., None], pose[..., :2], out)

    def to_json(self) -> str:
        """The decoding as JSON (an ONNX export's ``posefix.decoding`` metadata)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Decoding:
        """The decoding :meth:`to_json` wrote."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a decoding must be a JSON object, got {type(data).__name__}")
        return cls(**data)  # __post_init__ makes a list of steps a tuple

    def describe(self) -> str:
        """One line for summaries, e.g. ``gate 0.8, steps 0-0.6, flip test, score auto,
        NMS 0.9``."""
        parts = ["gate " + ("off" if self.gate is None else f"{self.gate:g}")]
        if self.steps is not None:
            lo, hi = min(self.steps), max(self.steps)
            parts.append(f"step {lo:g}" if lo == hi else f"steps {lo:g}-{hi:g}")
        if self.hold_below is not None:
            parts.append(f"hold below {self.hold_below:g}")
        if self.hold_above_shrink is not None:
            parts.append(f"hold above {self.hold_above_shrink:g}x shrink")
        parts += ["flip test" if self.flip else "no flip test", f"score {self.score}",
                  "NMS off" if self.nms <= 0 else f"NMS {self.nms:g}"]
        return ", ".join(parts)
