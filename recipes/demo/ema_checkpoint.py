"""A training checkpoint's moving-average weights as a checkpoint of their own.

``last.pt`` (and the step checkpoints) carry the raw weights as the model and the moving
average (``optim.ema_decay``) in ``extra["ema"]``; ``final.pt`` carries the average. To
measure or ship a run that has not finished (issue 28's fine-tune on 2 busy cores):

    .venv/bin/python recipes/demo/ema_checkpoint.py runs/coco_finetune/last.pt runs/ft.pt
"""

from __future__ import annotations

import argparse

from posefix.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    args = ap.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.model.load_state_dict(ckpt.extra["ema"])
    save_checkpoint(args.out, model=ckpt.model, config=ckpt.config, spec=ckpt.spec,
                    extra={"step": ckpt.extra.get("step"), "epoch": ckpt.extra.get("epoch"),
                           "ema_of": str(args.checkpoint)})
    print(f"wrote {args.out}: the moving average of {args.checkpoint}, step "
          f"{ckpt.extra.get('step')}")


if __name__ == "__main__":
    main()
