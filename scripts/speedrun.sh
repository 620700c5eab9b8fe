#!/usr/bin/env bash
# The whole pipeline, each stage through the same script a user would run by hand:
#   tokenizer -> pretraining -> base eval -> mid-training -> chat eval -> SFT -> chat eval -> report card
#
#   bash scripts/speedrun.sh                 # = tiny: offline, 2 CPU cores, about 15 minutes (make speedrun)
#   bash scripts/speedrun.sh tiny --out runs/tiny
#   bash scripts/speedrun.sh d24             # nanochat master's speedrun (d24, ratio 8) on one 8-GPU node (README)
#   bash scripts/speedrun.sh d12 --quick     # shortened stages (used by the tests and smoke checks)
#
# Everything lands in one run folder (--out, default $HF_NANOGPT_BASE_DIR or ./out): tokenizer/, base/,
# mid/, sft/ (each loadable with the Auto classes), report/ and report.md.
# GPU runs use `accelerate launch` with recipes/accelerate/ddp_8gpu.yaml (override with ACCEL_CONFIG,
# NPROC) and expect ClimbMix shards (karpathy/climbmix-400b-shuffle, nanochat master's corpus) in
# ~/.cache/hf_nanogpt/climbmix (downloaded below). Like nanochat master, the GPU sizes skip mid-training
# (merged into SFT in January 2026): base -> SFT (recipes/d20-sft.yaml, from the base model).
set -euo pipefail

SIZE=tiny
OUT="${HF_NANOGPT_BASE_DIR:-out}"
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    tiny|d12|d20|d24|d26|d32) SIZE="$1"; shift ;;
    *) echo "speedrun.sh: unknown argument '$1' (expected tiny|d12|d20|d24|d26|d32, --out DIR, --quick)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export HF_NANOGPT_BASE_DIR="$OUT"
export TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
rm -rf "$OUT/report"                         # a fresh report card for this run
START=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }

if [ "$SIZE" = tiny ]; then
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1   # the tiny run never needs the network
  LAUNCH=("$PY")
  TOK_ARGS=(--vocab_size 4096 --max_chars 20000000 --data stdlib)
  PRE=recipes/tiny.yaml MID=recipes/tiny-mid.yaml SFT=recipes/tiny-sft.yaml
  BASE_EVAL_ARGS=(--max_per_task 16 --bpb_steps 8)
  CHAT_TASKS=SpellingBee,Arithmetic,GSM8K,MMLU,ARC-Easy,ARC-Challenge,HumanEval
  CHAT_EVAL_ARGS=(--max_problems 48 --max_new_tokens 96 --spelling_size 64)
  EXTRA=()
  if [ "$QUICK" = 1 ]; then
    TOK_ARGS=(--vocab_size 1024 --max_chars 2000000 --data stdlib)
    EXTRA=(--num_iterations=12 --eval_every=6 --eval_tokens=8192)
    # mid-training gets enough steps to learn the calculator format (the speedrun test asks "What is 12*34?")
    MID_EXTRA=(--num_iterations=150 --eval_every=75 --eval_tokens=8192)
    BASE_EVAL_ARGS=(--max_per_task 2 --bpb_steps 2 --no_samples)
    CHAT_TASKS=SpellingBee,Arithmetic,GSM8K
    CHAT_EVAL_ARGS=(--max_problems 4 --max_new_tokens 24 --spelling_size 8)
  fi
else
  NPROC="${NPROC:-8}"
  LAUNCH=(accelerate launch --config_file "${ACCEL_CONFIG:-recipes/accelerate/ddp_8gpu.yaml}" --num_processes "$NPROC")
  TOK_ARGS=(--vocab_size 32768 --max_chars 2000000000 --data "$HOME/.cache/hf_nanogpt/climbmix/*.parquet[:-1]")
  PRE="recipes/$SIZE.yaml" MID="" SFT=recipes/d20-sft.yaml
  BASE_EVAL_ARGS=(--max_per_task -1)
  CHAT_TASKS=ARC-Easy,ARC-Challenge,MMLU,GSM8K,HumanEval,SpellingBee
  CHAT_EVAL_ARGS=()
  EXTRA=()
  [ "$QUICK" = 1 ] && EXTRA=(--num_iterations=20 --eval_every=10 --core_metric_every=-1)
  # shards for each recipe's token horizon (nanochat master: ~170 for the d24 speedrun), the last one held out
  declare -A SHARDS=([d12]=40 [d20]=160 [d24]=170 [d26]=330 [d32]=600)
  stage "data: ${SHARDS[$SIZE]} ClimbMix shards"
  "$PY" scripts/download_data.py -n "${SHARDS[$SIZE]}" --repo karpathy/climbmix-400b-shuffle \
    --output_dir "$HOME/.cache/hf_nanogpt/climbmix"
fi

stage "tokenizer: train"
"$PY" scripts/tok_train.py --output_dir "$OUT/tokenizer" "${TOK_ARGS[@]}"
stage "tokenizer: bytes per token"
"$PY" scripts/tok_eval.py --tokenizer "$OUT/tokenizer" || echo "(tok_eval failed; continuing)"

stage "pretrain: $PRE"
"${LAUNCH[@]}" scripts/pretrain.py "$PRE" --output_dir="$OUT/base" --tokenizer="$OUT/tokenizer" "${EXTRA[@]}"
stage "base eval: CORE, bits per byte, samples"
"${LAUNCH[@]}" scripts/base_eval.py --model "$OUT/base" --run_dir "$OUT" "${BASE_EVAL_ARGS[@]}"

SFT_FROM="$OUT/base"
if [ -n "$MID" ]; then
  stage "mid-train: $MID"
  [ -n "${MID_EXTRA+x}" ] || MID_EXTRA=("${EXTRA[@]}")
  "${LAUNCH[@]}" scripts/midtrain.py "$MID" --init_from="$OUT/base" --output_dir="$OUT/mid" "${MID_EXTRA[@]}"
  stage "chat eval (mid): $CHAT_TASKS"
  "${LAUNCH[@]}" scripts/chat_eval.py -i "$OUT/mid" -a "$CHAT_TASKS" --run_dir "$OUT" "${CHAT_EVAL_ARGS[@]}"
  SFT_FROM="$OUT/mid"
fi

stage "SFT: $SFT"
"${LAUNCH[@]}" scripts/sft.py "$SFT" --init_from="$SFT_FROM" --output_dir="$OUT/sft" "${EXTRA[@]}"
stage "chat eval (sft): $CHAT_TASKS"
"${LAUNCH[@]}" scripts/chat_eval.py -i "$OUT/sft" -a "$CHAT_TASKS" --run_dir "$OUT" "${CHAT_EVAL_ARGS[@]}"

stage "report card"
"$PY" -m hf_nanogpt.report --run_dir "$OUT"
echo
echo "Done in $(( $(date +%s) - START ))s. Report: $OUT/report.md"
echo "Chat with the model:  HF_NANOGPT_BASE_DIR=$OUT python scripts/chat_cli.py -i sft"
echo "              or web:  python scripts/chat_web.py --model $OUT/sft"
