#!/usr/bin/env bash
# The whole mission on one CPU: synthesise 960 fps clips, extract blur/sharp shards, align,
# verify, inspect (contact sheet), train a small DSANet on three clips, evaluate it on a held-out
# fourth, deblur one image. Called by `make demo` with the venv's bin on PATH.
# The last line is `held-out gain: +X.XX dB` (restored-vs-blurred PSNR on the held-out clip).
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT/clips"

echo "== 1. synthesise 960 fps test clips (known camera shake, a moving object; one with 4% flicker)"
# Three short clips to train on and a fourth, never seen in training, to evaluate on.
for seed in 1 2 3; do
  blurforge synth "$OUT/clips/train$seed.mp4" --frames 400 --size 640x360 --seed $seed --quiet
done
blurforge synth "$OUT/clips/heldout.mp4" --frames 400 --size 640x360 --seed 4 --quiet
blurforge synth "$OUT/clips/flicker.mp4" --frames 400 --size 640x360 --seed 5 --flicker 0.04 --quiet
blurforge probe "$OUT/clips/train1.mp4" --windows 36,73

echo "== 2. extract blur/sharp pairs (windows of 36 and 73 frames, linear light, flicker removed)"
blurforge extract "$OUT"/clips/train?.mp4 --windows 36,73 --out "$OUT/data/train"
blurforge extract "$OUT/clips/heldout.mp4" --windows 36,73 --out "$OUT/data/heldout"
blurforge extract "$OUT/clips/flicker.mp4" --windows 36,73 --out "$OUT/data/flicker"

echo "== 3. align every pair (ECC + per-channel gain), verify, inspect"
blurforge align "$OUT/data/train" "$OUT/data/heldout" "$OUT/data/flicker" --quiet
blurforge verify "$OUT"/data/*/*.h5
blurforge inspect "$OUT"/data/*/*.h5 --sheet "$OUT/contact_sheet.png"
echo "contact sheet: $OUT/contact_sheet.png"

echo "== 4. train a small DSANet, evaluate on the held-out clip, deblur one image"
bash scripts/demo_train.sh "$OUT/data/train" "$OUT/data/heldout" "$OUT/train"
