"""The mean of several checkpoints' weights as a checkpoint of its own (a uniform "model
soup", Wortsman et al., ICML 2022). With a model and its fine-tune on a new domain it is
WiSE-FT (Wortsman et al., CVPR 2022) with a mixing weight of one half: the average keeps
much of what fine-tuning gained and of what it forgot. The shipped demo model is the soup of
the LSP-trained model and its COCO fine-tune (``train_coco.sh``).

The checkpoints must share the architecture and the keypoint layout; the soup takes the
first one's config (its decoding included) and records where its weights came from.
BatchNorm statistics are averaged like the weights; integer buffers (BatchNorm's batch
counter) are the first's.

    .venv/bin/python recipes/demo/soup.py runs/coco_finetune/final.pt runs/demo_lsp.pt \
        --out runs/coco_soup.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from posefix.checkpoint import load_checkpoint, save_checkpoint


def soup(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The mean of the state dicts of ``paths`` (float tensors; others from the first)."""
    states = [load_checkpoint(p).model.state_dict() for p in paths]
    keys = set(states[0])
    for p, s in zip(paths[1:], states[1:], strict=True):
        if set(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise SystemExit(f"{p}: not the architecture of {paths[0]}")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
            if v.is_floating_point() else v.clone() for k, v in states[0].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if len(args.checkpoints) < 2:
        raise SystemExit("give two checkpoints or more")
    first = load_checkpoint(args.checkpoints[0])
    first.model.load_state_dict(soup(args.checkpoints))
    save_checkpoint(args.out, model=first.model, config=first.config, spec=first.spec,
                    extra={"soup_of": [str(p) for p in args.checkpoints]})
    print(f"wrote {args.out}: the mean of {', '.join(map(str, args.checkpoints))}")


if __name__ == "__main__":
    main()
