#!/bin/sh
# linearity_experiment.sh - the cosine-regulariser experiment of Razzhigaev et al. (2024) at
# lumen's scale: two copies of the shipped model's architecture trained on the same data with
# the same seed, without and with `--linearity-reg`, then their validation loss and linearity
# profiles (docs/linearity.md). Needs the data of `make model` (build/model/data).
# Environment: BUILD (default build), WORK (default $BUILD/model), STEPS (default 800),
# LAMBDA (default 0.1), THREADS (default 2), SEED (default 1337; outputs of other seeds get a
# _sSEED suffix), EVAL_TEXT (default the TinyStories sample).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORK=${WORK:-$BUILD/model}
STEPS=${STEPS:-800}
LAMBDA=${LAMBDA:-0.1}
THREADS=${THREADS:-2}
SEED=${SEED:-1337}
SUFFIX=""
[ "$SEED" = 1337 ] || SUFFIX="_s$SEED"
EVAL_TEXT=${EVAL_TEXT:-../shared/assets/text/tinystories_train_head_197k.txt}
LUMEN=$BUILD/lumen
[ -d "$WORK/data" ] || { echo "run 'make model' first (needs $WORK/data)" >&2; exit 1; }
for reg in 0 "$LAMBDA"; do
  out="$WORK/linexp_reg$reg$SUFFIX"
  echo "== training with --linearity-reg $reg ($STEPS steps)"
  "$LUMEN" train --data "$WORK/data" --tokenizer "$WORK/tokenizer.json" -o "$out" \
    --arch llama --dim 192 --layers 4 --heads 6 --kv-heads 2 --ffn 512 --ctx 128 \
    --batch 16 --steps "$STEPS" --warmup 50 --lr 3e-3 --min-lr 3e-4 --wd 0.1 --clip 1.0 \
    --eval-every 200 --eval-batches 16 --save-every 200 --seed "$SEED" --threads "$THREADS" \
    --linearity-reg "$reg" --json --quiet >"$out.train.json"
  cat "$out.train.json"
  "$LUMEN" linearity "$out" "$EVAL_TEXT" --tokens 4096 --ctx 128 --json --svg "$out.linearity.svg" >"$out.linearity.json"
  cat "$out.linearity.json"
  "$LUMEN" mc-eval "$out" data/calendar_eval.json --json >"$out.calendar.json"
  cat "$out.calendar.json"
done
