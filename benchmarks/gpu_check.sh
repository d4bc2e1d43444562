#!/usr/bin/env bash
# jreid's speed on one GPU (H100/H200), side by side with PyTorch, in under 8 minutes:
#   1. training images/s of a ResNet-50 BoT step at 256x128, batch 64: jreid bfloat16 against
#      PyTorch AMP (channels_last; torch.compile when it works there), with the MFU of each;
#   2. QAConv all-pairs pairs/s on 24x8x128 maps, float32 and bfloat16, with the projected time
#      of the full MSMT17 test (957,915,099 pairs);
#   3. ranking metrics at MSMT17 scale (11,659 x 82,161) from features on the GPU.
# Each writes benchmarks/results/<name>_gpu.json (device, versions, command, figures).
#
#   bash benchmarks/gpu_check.sh                    # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run DIR      # any machine: tiny shapes, results in DIR
#
# The scripts import JAX, flax, optax, numpy and PyTorch only: the GPU machine has no
# TensorFlow, TFDS, faiss or ml-collections (tests/test_gpu_check.py runs the dry run with
# those blocked). Each step has a time limit, so one that hangs cannot take the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if [[ "${1:-}" == "--dry-run" ]]; then
  DRY=(--dry-run)
  OUT=${2:?"usage: $0 --dry-run OUTPUT_DIR"}
  SUFFIX=dryrun
else
  DRY=()
  OUT=benchmarks/results
  SUFFIX=gpu
  if ! "$PYTHON" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
    echo "gpu_check: JAX sees no GPU here; run with --dry-run DIR to check the scripts on a CPU" \
         "(no *_gpu.json is written without a GPU)." >&2
    exit 1
  fi
fi
mkdir -p "$OUT"
failed=()

step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2 start=$SECONDS
  shift 2
  echo "== $name: $*"
  if ! timeout "$limit" "$@"; then
    failed+=("$name")
    echo "gpu_check: $name failed or ran past ${limit} s" >&2
  fi
  echo "   $name: $((SECONDS - start)) s"
}

step 200 train_speed "$PYTHON" benchmarks/train_speed.py --bf16 --torch-compile --steps 20 \
  --warmup 3 "${DRY[@]}" --out "$OUT/train_speed_$SUFFIX.json"
step 150 qaconv_speed "$PYTHON" benchmarks/qaconv_speed.py --num-query 1024 --num-gallery 16384 \
  "${DRY[@]}" --output "$OUT/qaconv_speed_$SUFFIX.json"
step 110 rank_speed "$PYTHON" benchmarks/rank_speed.py "${DRY[@]}" \
  --out "$OUT/rank_speed_$SUFFIX.json"

if ((${#failed[@]})); then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: results in $OUT/*_$SUFFIX.json"
