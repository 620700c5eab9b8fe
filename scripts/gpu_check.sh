#!/usr/bin/env bash
# The GPU readiness check: training throughput, MFU and peak memory on one GPU, in at most ~8 minutes
# on one H200 (see the README's Performance section).
#
#   bash scripts/gpu_check.sh                    # writes gpu_check/{d12,d20}.json and gpu_check/report.md
#   bash scripts/gpu_check.sh --output_dir runs/gpu   # another folder (--out, as speedrun.sh)
#   bash scripts/gpu_check.sh --dry-run          # print the plan (contenders, FLOPs per token), run nothing
#
# What runs (scripts/bench.py train, each contender in its own process, sequence length 2048):
#   d12 (batch 16): Llama + AdamW eager and compiled; ours + Muon eager and compiled; ours + Muon FP8 compiled
#   d20 (batch 16): the same five
# reporting tokens/s, MFU (nanochat's FLOP convention over the GPU's dense bf16 peak), peak memory, and
# the compiled/eager and FP8/bf16 ratios. FP8 needs torchao (pip install torchao, or the fp8 extra);
# without it the FP8 rows are skipped with a note. Flash attention comes from PyTorch's SDPA kernels.
set -euo pipefail

OUT=gpu_check
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--output_dir) OUT="$2"; shift 2 ;;
    --out=*|--output_dir=*) OUT="${1#*=}"; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (expected --output_dir DIR, --dry-run)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
FP8=(--fp8)
if ! "$PY" -c "import torchao" 2>/dev/null; then
  echo "note: torchao is not installed: the FP8 rows are skipped (pip install torchao)"
  FP8=()
fi
# short timing windows: a d20 step is ~0.3 s on an H200, compilation dominates each contender's time
COMMON=(--device cuda --compile both --models nanogpt+muon llama+adamw --steps 8 --windows 2 --warmup 3 "${FP8[@]}")

if [ "$DRY" = 1 ]; then
  for size in d12 d20; do
    "$PY" scripts/bench.py train --size "$size" "${COMMON[@]}" --dry_run
  done
  exit 0
fi

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device visible to torch')"
mkdir -p "$OUT"
START=$(date +%s)
{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  for size in d12 d20; do
    echo
    echo "## $size, sequence length 2048"
    echo
    "$PY" scripts/bench.py train --size "$size" "${COMMON[@]}" --json "$OUT/$size.json"
    echo "(elapsed $(( $(date +%s) - START )) s)"
  done
} 2>&1 | tee "$OUT/report.md"
echo "wrote $OUT/report.md, $OUT/d12.json, $OUT/d20.json in $(( $(date +%s) - START )) s"
