"""Ship a trained demo checkpoint: weights in half precision, into the package.

The shipped file carries its training config (with ``model.error_gate`` set to the chosen
gate), and in ``extra.shipped_from`` the source checkpoint, step, seed, the command that
trained it and the data it trained on (``split.yaml``).

    .venv/bin/python recipes/demo/ship.py runs/demo/final.pt --error-gate 0.5 \
        --set model.error_blend=0.25 "model.error_blend_keypoints={left_wrist: 0}"

Shipping the shipped file again with new decoding settings (``--error-gate``, ``--set``)
keeps its weights and its ``shipped_from`` record, and appends the settings to it.
``--out`` writes elsewhere (a candidate, e.g. ``runs/coco_finetune/ship.pt``) and ``--config``
names the recipe config that trained it (default ``config.yaml``; ``coco_finetune.yaml``
for the crowded-scenes fine-tuning).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from posefix.checkpoint import load_checkpoint, save_checkpoint
from posefix.config import Config, override_config

HERE = Path(__file__).resolve().parent
DEST = HERE.parents[1] / "src" / "posefix" / "assets" / "demo_model.pt"
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/posefix train recipes/demo/{}"


def main() -> None:
    """Convert a checkpoint to a half-precision one at the package's default path."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--error-gate", type=float, default=None,
                    help="the gate to ship; default: as trained")
    ap.add_argument("--set", nargs="*", default=[], metavar="model.KEY=VALUE",
                    help="other decoding settings to ship (e.g. model.error_blend=0.25)")
    ap.add_argument("--out", default=str(DEST), help="default: the package's demo model")
    ap.add_argument("--config", default="config.yaml", help="the recipe config it trained with")
    ap.add_argument("--command", default=None,
                    help="the command that made it (default: posefix train on --config)")
    args = ap.parse_args()
    dest = Path(args.out)
    ckpt = load_checkpoint(args.checkpoint)
    gate = [] if args.error_gate is None else [f"model.error_gate={args.error_gate}"]
    config = _overridden(ckpt.config, gate + args.set)
    # a shipped file shipped again (new decoding settings) keeps where its weights came from
    info = dict(ckpt.extra.get("shipped_from") or {
        "source": str(args.checkpoint), "step": ckpt.extra.get("step"),
        "epoch": ckpt.extra.get("epoch"), "seed": config.run.seed,
        "command": args.command or COMMAND.format(args.config),
        "data": yaml.safe_load((HERE / "split.yaml").read_text())})
    if ckpt.extra.get("shipped_from"):
        info["reshipped"] = [*info.get("reshipped", []), {"from": str(args.checkpoint),
                                                          "settings": gate + args.set}]
    save_checkpoint(dest, model=ckpt.model, config=config, spec=ckpt.spec,
                    extra={"shipped_from": info}, half=True)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB) from {args.checkpoint}, "
          f"step {info['step']}, error gate {config.model.error_gate}, blend "
          f"{config.model.error_blend} {config.model.error_blend_keypoints or ''}")


def _overridden(config: Config, overrides: list[str]) -> Config:
    """``config`` with ``model.*`` decoding settings replaced (validated as a config is)."""
    for item in overrides:
        if not item.startswith("model."):
            raise SystemExit(f"ship.py: {item}: only model.* decoding settings can change")
    return override_config(config, overrides)


if __name__ == "__main__":
    main()
