#!/usr/bin/env bash
# The whole mission on one CPU: synthesise two 960 fps clips, extract blur/sharp shards, align,
# inspect (contact sheet), train a small DSANet on the first clip, evaluate on the second,
# deblur one image. Called by `make demo` with the venv's bin on PATH.
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT/clips"

echo "== 1. synthesise two 960 fps test clips (known camera shake, moving object, 4% flicker)"
blurforge synth "$OUT/clips/train.mp4" --frames 1100 --size 640x360 --seed 1 --flicker 0.04 --quiet
blurforge synth "$OUT/clips/heldout.mp4" --frames 700 --size 640x360 --seed 2 --flicker 0.04 \
  --photo coffee --quiet
blurforge probe "$OUT/clips/train.mp4" --windows 36,73

echo "== 2. extract blur/sharp pairs (windows of 36 and 73 frames, linear light, flicker removed)"
blurforge extract "$OUT/clips/train.mp4" --windows 36,73 --stride 36 --out "$OUT/data/train"
blurforge extract "$OUT/clips/heldout.mp4" --windows 36,73 --stride 36 --out "$OUT/data/heldout"

if blurforge align --help >/dev/null 2>&1; then
  echo "== 3. align every pair (ECC + per-channel gain), verify, inspect"
  blurforge align "$OUT/data/train" "$OUT/data/heldout" --quiet
  blurforge verify "$OUT"/data/*/*.h5
  blurforge inspect "$OUT"/data/*/*.h5 --sheet "$OUT/contact_sheet.png"
  echo "contact sheet: $OUT/contact_sheet.png"
fi

if [ -x scripts/demo_train.sh ]; then
  echo "== 4. train a small DSANet, evaluate on the held-out clip, deblur one image"
  bash scripts/demo_train.sh "$OUT/data/train" "$OUT/data/heldout" "$OUT"
fi
