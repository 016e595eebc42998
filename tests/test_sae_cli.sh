#!/bin/bash
# test_sae_cli.sh - `lumen sae`: help and usage errors, a short `sae train` run with --json, a rerun
# that finds the job finished, and a rerun with other options refused.
set -u
LUMEN=${LUMEN_BIN:?LUMEN_BIN not set}
A=${LUMEN_ASSETS:-../shared/assets}
MODEL=$(cd "$(dirname "$0")/.." && pwd)/models/lumen-tiny
TEXT=$A/text/tinystories_train_head_197k.txt
if [ ! -f "$TEXT" ] || [ ! -f "$MODEL/config.json" ]; then
  echo "SKIP: $TEXT or $MODEL not found"
  exit 77
fi
TMP=$(mktemp -d "${LUMEN_TMP:-/tmp}/saecli.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS="exitcode=86:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

"$LUMEN" sae >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "train MODEL FILE" "$TMP/o" && ok || bad "lumen sae without a command: rc $rc"
"$LUMEN" sae --help >"$TMP/o" 2>&1 && grep -q "train" "$TMP/o" && ok || bad "lumen sae --help"
"$LUMEN" sae train --help >"$TMP/o" 2>&1 && grep -q -- "--d-sae" "$TMP/o" && ok || bad "lumen sae train --help"
"$LUMEN" sae train "$MODEL" "$TEXT" --d-sae 64 -o "$TMP/x" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q -- "--hook" "$TMP/o" && ok || bad "missing --hook: rc $rc"
"$LUMEN" sae train "$MODEL" "$TEXT" --hook blocks.9.hook_resid_pre --d-sae 64 -o "$TMP/x" --quiet >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && ok || bad "bad hook layer: rc $rc"
"$LUMEN" sae train "$MODEL" "$TEXT" --arch foo --hook blocks.1.hook_resid_pre --d-sae 64 -o "$TMP/x" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && ok || bad "bad --arch: rc $rc"

ARGS=("$MODEL" "$TEXT" --hook blocks.1.hook_resid_pre --d-sae 128 --arch relu --l1 1 --lr 1e-3 --ctx 32
      --batch 128 --buffer-mult 4 --steps 30 --max-tokens 4000 --save-every 10 --quiet -o "$TMP/sae")
"$LUMEN" sae train "${ARGS[@]}" --json >"$TMP/j" 2>"$TMP/e"; rc=$?
[ $rc -eq 0 ] && grep -q '"steps":30' "$TMP/j" && grep -q '"already_done":false' "$TMP/j" && ok || bad "train: rc $rc $(cat "$TMP/e")"
for f in cfg.json sae_weights.safetensors sparsity.safetensors sae_log.jsonl ckpt/latest ckpt/step_00000030/trainer_state.json; do
  [ -f "$TMP/sae/$f" ] && ok || bad "missing $f"
done
[ "$(wc -l <"$TMP/sae/sae_log.jsonl")" -eq 3 ] && ok || bad "log lines: $(wc -l <"$TMP/sae/sae_log.jsonl")"
grep -q '"hook_name": *"blocks.1.hook_resid_pre"' "$TMP/sae/cfg.json" && ok || bad "cfg.json hook_name"
grep -q '"context_size": *32' "$TMP/sae/cfg.json" && ok || bad "cfg.json context_size"
"$LUMEN" sae train "${ARGS[@]}" --json >"$TMP/j" 2>"$TMP/e"; rc=$?
[ $rc -eq 0 ] && grep -q '"already_done":true' "$TMP/j" && ok || bad "rerun of a finished job: rc $rc"
"$LUMEN" sae train "${ARGS[@]}" --seed 5 >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "other options" "$TMP/o" && ok || bad "other options not refused: rc $rc"

# sae eval of the trained SAE: the hook from cfg.json, all keys, ce_clean equals `lumen eval`
"$LUMEN" sae eval --help >"$TMP/o" 2>&1 && grep -q "ce_loss_recovered" "$TMP/o" && ok || bad "sae eval --help"
"$LUMEN" sae eval "$MODEL" "$TMP/sae" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && ok || bad "sae eval without FILE: rc $rc"
"$LUMEN" sae eval "$MODEL" "$TMP/sae" "$TEXT" --ctx 32 --batch 4 --max-tokens 1000 --threads 2 --json >"$TMP/j" 2>"$TMP/e"; rc=$?
[ $rc -eq 0 ] && ok || bad "sae eval: rc $rc $(cat "$TMP/e")"
for k in mse fvu l0 dead_fraction dense_fraction ce_clean ce_sae ce_ablated ce_loss_recovered kl; do
  grep -q "\"$k\":" "$TMP/j" && ok || bad "sae eval: no $k in $(cat "$TMP/j")"
done
grep -q '"hook":"blocks.1.hook_resid_pre"' "$TMP/j" && ok || bad "sae eval hook: $(cat "$TMP/j")"
"$LUMEN" sae eval "$MODEL" "$TMP/sae" "$TEXT" --hook blocks.9.hook_resid_pre --ctx 32 --max-tokens 200 >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && ok || bad "sae eval bad hook: rc $rc"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
