#!/usr/bin/env bash
# The shipped demonstration model (issue 28, 2026-12-05), from the LSP-trained model that was
# shipped before it, with ../shared beside the repository (~25 min on 2 free CPU cores):
#   1. fine-tune it on crowded COCO scenes (coco_finetune.yaml, 1,628 steps);
#   2. average the fine-tune's weights with the LSP model's (soup.py: WiSE-FT);
#   3. train the soup's error head alone on the same data (coco_calibrate.yaml, 740 steps);
#   4. ship it in half precision with its decoding, and its ONNX exports (ship.py, ship_onnx.py).
# Each step's numbers: recipes/demo/README.md, "Issue 28: a soup of the two models".
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
mkdir -p runs
git show 53ef54d:src/posefix/assets/demo_model.pt > runs/demo_lsp.pt  # the LSP-trained model
.venv/bin/posefix train recipes/demo/coco_finetune.yaml run.progress=false
.venv/bin/python recipes/demo/soup.py runs/coco_finetune/final.pt runs/demo_lsp.pt \
    --out runs/coco_soup.pt
.venv/bin/posefix train recipes/demo/coco_calibrate.yaml run.progress=false
.venv/bin/python recipes/demo/ship.py runs/coco_calibrate/final.pt --config coco_calibrate.yaml \
    --command "bash recipes/demo/train_coco.sh"
.venv/bin/python recipes/demo/ship_onnx.py
