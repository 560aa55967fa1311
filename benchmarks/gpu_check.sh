#!/usr/bin/env bash
# The GPU check (issue 22): one script, under 8 minutes on one GPU, writing one JSON of
# figures ($GPU_CHECK_OUT/gpu_check.json, default runs/gpu_check/):
#   - trains r50_256x192 for 300 steps with AMP float16 on a tiled COCO-scale file
#     (benchmarks/make_coco_scale.py val: 6,352 persons on 5,000 images), SIGKILLs it
#     after step 170 and resumes it; the weights must equal an uninterrupted run's
#     (deterministic kernels in both);
#   - measures training crops/s with enough loader workers (one per CPU core, up to 16);
#   - refines 4,000 detections with --device cuda (detections/s) and checks the refined
#     keypoints of the first images against the CPU's (within 0.05 px).
# Exit status 0 when both checks pass.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with a GPU
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # the same steps on the CPU, tiny sizes (CI)
#
# Any GPU_CHECK_* variable overrides a default: DEVICE, CONFIG, STEPS, KILL, CKPT, BATCH,
# AMP (float16, bfloat16 or none), WORKERS, RESUME_WORKERS, DETS, COMPARE, OUT, OVERRIDES
# (extra config overrides), ANN/IMAGES/RESULTS (use these files instead of the tiled ones).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if [ "${GPU_CHECK_TINY:-0}" = "1" ]; then
    # tests/data's COCO sample, the tiny CPU network, a few steps: the script's own test.
    : "${GPU_CHECK_DEVICE:=cpu}" "${GPU_CHECK_CONFIG:=tiny_cpu}" "${GPU_CHECK_STEPS:=6}"
    : "${GPU_CHECK_KILL:=5}" "${GPU_CHECK_CKPT:=2}" "${GPU_CHECK_BATCH:=4}"
    : "${GPU_CHECK_AMP:=none}" "${GPU_CHECK_WORKERS:=1}" "${GPU_CHECK_RESUME_WORKERS:=0}"
    : "${GPU_CHECK_COMPARE:=3}" "${GPU_CHECK_ANN:=tests/data/coco/test_coco.json}"
    : "${GPU_CHECK_IMAGES:=tests/data/coco}"
    : "${GPU_CHECK_RESULTS:=tests/data/coco/blazepose_gtboxes.json}"
    : "${GPU_CHECK_OVERRIDES:=model.deconv_channels=16 data.repeat=2}"
    export GPU_CHECK_DEVICE GPU_CHECK_CONFIG GPU_CHECK_STEPS GPU_CHECK_KILL GPU_CHECK_CKPT \
        GPU_CHECK_BATCH GPU_CHECK_AMP GPU_CHECK_WORKERS GPU_CHECK_RESUME_WORKERS \
        GPU_CHECK_COMPARE GPU_CHECK_ANN GPU_CHECK_IMAGES GPU_CHECK_RESULTS GPU_CHECK_OVERRIDES
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py
