"""Ship a trained demo checkpoint: weights in half precision, into the package.

    .venv/bin/python recipes/demo/ship.py runs/demo_r18/final.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

from posefix.checkpoint import load_checkpoint, save_checkpoint


def main(src: str) -> None:
    """Convert ``src`` to a half-precision checkpoint at the package's default path."""
    ckpt = load_checkpoint(src)
    dst = Path(__file__).resolve().parents[2] / "src" / "posefix" / "assets" / "demo_model.pt"
    info = {"source": str(src), "step": ckpt.extra.get("step"), "epoch": ckpt.extra.get("epoch")}
    save_checkpoint(dst, model=ckpt.model, config=ckpt.config, spec=ckpt.spec,
                    extra={"shipped_from": info}, half=True)
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB) from {src} {info}")


if __name__ == "__main__":
    main(sys.argv[1])
