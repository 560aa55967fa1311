"""Ship a trained demo checkpoint: weights in half precision, into the package.

The shipped file carries its training config (with ``model.error_gate`` set to the chosen
gate), and in ``extra.shipped_from`` the source checkpoint, step, seed, the command that
trained it and the data it trained on (``split.yaml``).

    .venv/bin/python recipes/demo/ship.py runs/demo/final.pt --error-gate 0.5

``--out`` writes elsewhere (a candidate, e.g. ``runs/kinds/ship.pt``) and ``--config`` names
the recipe config that trained it (default ``config.yaml``; ``kinds.yaml`` for the
error-kind fine-tuning).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from posefix.checkpoint import load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
DEST = HERE.parents[1] / "src" / "posefix" / "assets" / "demo_model.pt"
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/posefix train recipes/demo/{}"


def main() -> None:
    """Convert a checkpoint to a half-precision one at the package's default path."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--error-gate", type=float, default=None,
                    help="the gate to ship (recipes/demo/choose_gate.py); default: as trained")
    ap.add_argument("--out", default=str(DEST), help="default: the package's demo model")
    ap.add_argument("--config", default="config.yaml", help="the recipe config it trained with")
    args = ap.parse_args()
    dest = Path(args.out)
    ckpt = load_checkpoint(args.checkpoint)
    config = ckpt.config
    if args.error_gate is not None:
        ckpt.model.set_error_gate(args.error_gate)
        config = dataclasses.replace(config, model=dataclasses.replace(
            config.model, error_gate=ckpt.model.error_gate))
    info = {"source": str(args.checkpoint), "step": ckpt.extra.get("step"),
            "epoch": ckpt.extra.get("epoch"), "seed": config.run.seed,
            "command": COMMAND.format(args.config),
            "data": yaml.safe_load((HERE / "split.yaml").read_text())}
    save_checkpoint(dest, model=ckpt.model, config=config, spec=ckpt.spec,
                    extra={"shipped_from": info}, half=True)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB) from {args.checkpoint}, "
          f"step {info['step']}, error gate {config.model.error_gate}")


if __name__ == "__main__":
    main()
