#!/usr/bin/env bash
# The whole job on one CPU, with an honest held-out test: synthesise 960 fps clips of many scenes,
# extract blur/sharp shards, align, verify, inspect (contact sheet), train a small DSANet on the
# training scenes (keeping the weights that do best on separate validation scenes), then score it
# on a photo that no training or validation clip shows, and deblur one of its images.
# Called by `make demo` with the venv's bin on PATH. The last line is `held-out gain: +X.XX dB`.
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
JOBS=$(nproc 2>/dev/null || echo 2)

# Scenes are PHOTO:SEED. deadleaves is a synthetic scene, a new one per seed (occluding discs at
# every scale: edges of every orientation and contrast); the photos ship with scikit-image. The
# seed also draws the camera motion (a pan of random direction and speed plus hand shake), so every
# clip blurs differently.
TRAIN_SCENES="$(printf 'deadleaves:%s ' $(seq 101 124)) coffee:1 coffee:2 rocket:3 rocket:4
  motorcycle:5 motorcycle:6 hubble_deep_field:7 hubble_deep_field:8 immunohistochemistry:9
  immunohistochemistry:10 retina:11 retina:12"
VAL_SCENES="deadleaves:201 camera:21"
HELDOUT_SCENES="astronaut:98 chelsea:99"
CLIP=(--frames 500 --size 320x180 --shake 6 --pan 500 --no-object --quiet)
WINDOWS=73,145

rm -rf "$OUT/clips" "$OUT/data" "$OUT/train"
mkdir -p "$OUT"/clips/{train,val,heldout}

synth_scenes() {  # FOLDER SCENE...: JOBS clips at a time
  local dir=$1 s pids=()
  shift
  for s in "$@"; do
    blurforge synth "$dir/${s%%:*}-${s##*:}.mp4" --photo "${s%%:*}" --seed "${s##*:}" "${CLIP[@]}" \
      >/dev/null &
    pids+=($!)
    if [ ${#pids[@]} -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for s in "${pids[@]}"; do wait "$s"; done
}

echo "== 1. synthesise 960 fps clips (320x180, panning and shaking camera): $(wc -w <<<"$TRAIN_SCENES") training" \
     "scenes, $(wc -w <<<"$VAL_SCENES") validation scenes, and the held-out photos" \
     "$(sed 's/:[0-9]*//g' <<<"$HELDOUT_SCENES"), never used in training or validation"
synth_scenes "$OUT/clips/train" $TRAIN_SCENES
synth_scenes "$OUT/clips/val" $VAL_SCENES
synth_scenes "$OUT/clips/heldout" $HELDOUT_SCENES
# one 640x360 clip with 4% mains flicker and a fast object, to show flicker removal and ghosting
# (not used in training or evaluation)
blurforge synth "$OUT/clips/flicker.mp4" --photo rocket --frames 400 --size 640x360 --seed 5 --flicker 0.04 \
  --quiet
blurforge probe "$OUT"/clips/heldout/*.mp4 --windows "$WINDOWS"

echo "== 2. extract blur/sharp pairs (windows of 73 and 145 frames: 76 and 151 ms exposures, linear light)"
blurforge extract "$OUT"/clips/train/*.mp4 --windows "$WINDOWS" --stride 37 --out "$OUT/data/train" \
  --jobs "$JOBS" --quiet
blurforge extract "$OUT"/clips/val/*.mp4 --windows "$WINDOWS" --stride 37 --out "$OUT/data/val" --quiet
blurforge extract "$OUT"/clips/heldout/*.mp4 --windows "$WINDOWS" --stride 37 --out "$OUT/data/heldout"
blurforge extract "$OUT/clips/flicker.mp4" --windows "$WINDOWS" --out "$OUT/data/flicker"

echo "== 3. align every pair (to the exposure centroid from the measured trajectory, checked by ECC; per-channel gain), verify, inspect"
blurforge align "$OUT/data" --jobs "$JOBS" --quiet
blurforge verify "$OUT/data" --quiet
blurforge inspect "$OUT/data/heldout" "$OUT/data/flicker" --sheet "$OUT/contact_sheet.png"

echo "== 4. train a small DSANet, evaluate on the held-out photos, deblur one of their images"
bash scripts/demo_train.sh "$OUT/data/train" "$OUT/data/val" "$OUT/data/heldout" "$OUT" | tee "$OUT/train.log" \
  | sed '$d'
echo "demo: $((SECONDS / 60)) min $((SECONDS % 60)) s"
tail -n 1 "$OUT/train.log"
