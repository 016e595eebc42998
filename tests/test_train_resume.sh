#!/bin/bash
# test_train_resume.sh - `lumen train` end to end on a tiny model: it learns (loss falls), writes
# checkpoints and a JSONL log, a run killed with SIGKILL at a random moment and started again
# ends bit-identical to an uninterrupted run, and bad input stops with a clear message.
set -u
LUMEN=${LUMEN_BIN:?LUMEN_BIN not set}
A=${LUMEN_ASSETS:-../shared/assets}
if [ ! -f "$A/text/cs336_tinystories_sample.txt" ]; then
  echo "SKIP: shared assets not found at $A"
  exit 77
fi
TMP=$(mktemp -d "${LUMEN_TMP:-/tmp}/trainres.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS="exitcode=86:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1:${UBSAN_OPTIONS:-}"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

TOK=$A/models/tiny-random-gpt2/tokenizer.json
"$LUMEN" tokenize-data "$TOK" "$A/text/cs336_tinystories_sample.txt" -o "$TMP/data" >/dev/null 2>"$TMP/err" && ok || bad "tokenize-data: $(cat "$TMP/err")"
ARGS=(--data "$TMP/data" --tokenizer "$TOK" --dim 32 --layers 2 --heads 4 --kv-heads 2 --ffn 64 --ctx 32 --batch 4 --steps 30
      --warmup 3 --lr 3e-3 --eval-every 10 --eval-batches 2 --save-every 5 --seed 7 --threads 2 --quiet)

# uninterrupted
"$LUMEN" train "${ARGS[@]}" -o "$TMP/full" --json >"$TMP/full.json" 2>"$TMP/err" && ok || bad "train: $(cat "$TMP/err")"
[ -f "$TMP/full/model.safetensors" ] && [ -f "$TMP/full/config.json" ] && [ -f "$TMP/full/ckpt/latest" ] && ok || bad "train wrote no model/checkpoint"
lines=$(wc -l <"$TMP/full/train_log.jsonl")
[ "$lines" -eq 30 ] && ok || bad "log has $lines lines, expected 30"
first=$(head -1 "$TMP/full/train_log.jsonl" | sed -n 's/.*"loss": *\([0-9.e+-]*\).*/\1/p')
last=$(tail -1 "$TMP/full/train_log.jsonl" | sed -n 's/.*"loss": *\([0-9.e+-]*\).*/\1/p')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' && ok || bad "loss did not fall: $first -> $last"
grep -q '"val_loss"' "$TMP/full/train_log.jsonl" && ok || bad "no val_loss in the log"

# killed at a random moment (several times), then resumed to the end
for attempt in 1 2 3; do
  "$LUMEN" train "${ARGS[@]}" -o "$TMP/killed" >/dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
done
"$LUMEN" train "${ARGS[@]}" -o "$TMP/killed" --json >"$TMP/killed.json" 2>"$TMP/err" && ok || bad "resume: $(cat "$TMP/err")"
cmp -s "$TMP/full/model.safetensors" "$TMP/killed/model.safetensors" && ok || bad "resumed run differs from the uninterrupted one ($(cat "$TMP/killed.json"))"
cmp -s "$TMP/full/train_log.jsonl" "$TMP/killed/train_log.jsonl" || {
  # the logs agree on everything but the speed field
  sed 's/"tokens_per_s": *[0-9.e+-]*//' "$TMP/full/train_log.jsonl" >"$TMP/l1"
  sed 's/"tokens_per_s": *[0-9.e+-]*//' "$TMP/killed/train_log.jsonl" >"$TMP/l2"
  cmp -s "$TMP/l1" "$TMP/l2" && ok || bad "resumed log differs"
}
# the trained model runs
"$LUMEN" generate "$TMP/full" -p "Once upon a time" -n 8 -t 0 >/dev/null 2>"$TMP/err" && ok || bad "generate on the trained model: $(cat "$TMP/err")"

# bad input
expect_error() {
  local needle=$1
  shift
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ $rc -ne 1 ]; then bad "expected exit 1, got $rc: $* ($(head -c 300 "$TMP/err"))"
  elif ! grep -qF -- "$needle" "$TMP/err"; then bad "message lacks '$needle': $(head -c 300 "$TMP/err")"
  else ok; fi
}
: >"$TMP/empty.txt"
expect_error "$TMP/empty.txt" "$LUMEN" tokenize-data "$TOK" "$TMP/empty.txt" -o "$TMP/data_empty"
expect_error "$TMP/none" "$LUMEN" train "${ARGS[@]/$TMP\/data/$TMP/none}" -o "$TMP/x"
# a corrupted checkpoint is reported, not trained over
cp -r "$TMP/full" "$TMP/corrupt"
ck=$(cat "$TMP/corrupt/ckpt/latest")
head -c 100 "$TMP/full/ckpt/$ck/optimizer.safetensors" >"$TMP/corrupt/ckpt/$ck/optimizer.safetensors"
expect_error "optimizer.safetensors" "$LUMEN" train "${ARGS[@]}" -o "$TMP/corrupt"
# options that differ from the checkpoint's are refused
expect_error "other options" "$LUMEN" train "${ARGS[@]/--seed/--batch}" -o "$TMP/full"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
