#!/usr/bin/env bash
# Demo: train a tiny DSANet on CPU, score it on held-out shards, deblur one held-out image.
#
#   scripts/demo_train.sh TRAIN_SHARD_DIR HELDOUT_SHARD_DIR [OUT_DIR]
#
# About 5 minutes on a 2-core CPU (DEMO_STEPS scales it; DEMO_PROCS=1 trains in one process).
# Two single-threaded data-parallel processes (torchrun, gloo) are ~1.35x faster than one
# process with two threads for a network this small. The last line printed is exactly
#   held-out gain: +X.XX dB
# = mean PSNR of the restored images minus mean PSNR of the blurred inputs, both against the sharp
# images of the held-out shards (RGB uint8, no border crop, every pair of every window label).
set -euo pipefail

usage="usage: scripts/demo_train.sh TRAIN_SHARD_DIR HELDOUT_SHARD_DIR [OUT_DIR]"
TRAIN=${1:?$usage}
HELD=${2:?$usage}
OUT=${3:-demo-out/train}
STEPS=${DEMO_STEPS:-2000}
CORES=$(nproc 2>/dev/null || echo 2)
PROCS=${DEMO_PROCS:-$(( CORES >= 2 ? 2 : 1 ))}

for d in "$TRAIN" "$HELD"; do
  if ! compgen -G "$d/*.h5" >/dev/null; then
    echo "demo_train: no .h5 shards in $d" >&2
    exit 1
  fi
done

# the venv's tools (make demo puts them on PATH); fall back to this checkout's .venv
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if command -v dsanet-train >/dev/null 2>&1; then
  BIN=$(dirname "$(command -v dsanet-train)")
else
  BIN="$ROOT/.venv/bin"
fi
PY="$BIN/python"
[ -x "$PY" ] || PY=python3
PROGRESS=--no-progress
[ -t 2 ] && PROGRESS=--progress

mkdir -p "$OUT"
RUN="$OUT/run"
rm -rf "$RUN"
start=$(date +%s)

# Tiny DSANet at width 16 (as fast as width 12 on CPU: small convolutions are overhead-bound),
# started as the identity (residual branches zero-initialised), half of the crops placed where
# the blur is, Adam 2e-3 with a short warm-up, cosine to 1e-5. Global batch 4 x 128 px.
TRAIN_ARGS=(--shards "$TRAIN" --out "$RUN" --tiny --model-opt width=16 --model-opt residual_init=0.0
  --focus 0.5 --crop 128 --batch $(( 4 / PROCS )) --steps "$STEPS" --lr 2e-3 --warmup 100 --lr-min 1e-5
  --workers 0 --device cpu --log-every 100 --ckpt-every 500 --val-every 1000000 --no-tensorboard "$PROGRESS")
echo "== training a tiny DSANet on $TRAIN ($STEPS steps, CPU, $PROCS process(es))"
if [ "$PROCS" -gt 1 ] && [ -x "$BIN/torchrun" ]; then
  OMP_NUM_THREADS=1 "$BIN/torchrun" --standalone --nproc_per_node "$PROCS" -m dsanet.train "${TRAIN_ARGS[@]}"
else
  "$BIN/dsanet-train" "${TRAIN_ARGS[@]}"
fi
trained=$(date +%s)

echo "== evaluating on held-out shards $HELD"
"$BIN/dsanet-eval" --checkpoint "$RUN/model.safetensors" --shards "$HELD" --device cpu \
  --json "$OUT/heldout.json" --no-progress

echo "== deblurring one held-out image"
"$PY" - "$HELD" "$OUT" <<'PYEOF'
import sys
from pathlib import Path
import cv2
from blurforge.shards import open_shard, window_labels
held, out = Path(sys.argv[1]), Path(sys.argv[2])
shard = sorted(held.glob("*.h5"))[0]
with open_shard(shard) as f:
    lab = window_labels(f)[-1]
    i = int(f.attrs["num_pairs"]) // 2
    name = f"aligned/{lab}" if f"aligned/{lab}" in f else f"blur/{lab}"
    cv2.imwrite(str(out / "heldout_blurred.png"), cv2.cvtColor(f[name][i], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out / "heldout_sharp.png"), cv2.cvtColor(f["sharp"][i], cv2.COLOR_RGB2BGR))
print(f"{shard.name} pair {i}, window {lab} -> {out / 'heldout_blurred.png'}")
PYEOF
"$BIN/dsanet-deblur" --checkpoint "$RUN/model.safetensors" "$OUT/heldout_blurred.png" \
  --out "$OUT/deblurred" --device cpu --no-progress
end=$(date +%s)
echo "training $((trained - start)) s, total $((end - start)) s; outputs in $OUT"

"$PY" - "$OUT/heldout.json" <<'PYEOF'
import json, sys
a = json.load(open(sys.argv[1]))["all"]
print(f"held-out gain: {a['psnr'] - a['psnr_blur']:+.2f} dB")
PYEOF
