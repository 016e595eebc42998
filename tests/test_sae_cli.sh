#!/bin/bash
# test_sae_cli.sh - `lumen sae`: help and usage errors, a short `sae train` run with --json, a rerun
# that finds the job finished, and a rerun with other options refused; `sae eval`; `sae train --acts`
# on activation shards (same SAE as on the fly, resume, bad shards and manifests); --arch jumprelu.
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
"$LUMEN" sae train "${ARGS[@]}" --dec-norm 1 >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "other options" "$TMP/o" && ok || bad "--dec-norm not part of the run's options: rc $rc"
"$LUMEN" sae train "${ARGS[@]}" --dec-norm 0 >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && ok || bad "--dec-norm 0 accepted: rc $rc"

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

# --acts: training on `lumen activations` shards. With the same windows (ctx 64; 8 windows per
# forward in both, so the same forward batches) and fewer rows than the text holds, the shards
# give the same SAE as the model run on the fly, byte for byte.
"$LUMEN" activations "$MODEL" "$TEXT" --hook blocks.1.hook_resid_pre --hook blocks.2.hook_resid_post --ctx 64 \
  --batch 8 --max-tokens 5000 --shard-tokens 1024 --threads 2 -o "$TMP/acts" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 0 ] && [ -f "$TMP/acts/shard_00004.safetensors" ] && ok || bad "activations: rc $rc $(cat "$TMP/o")"
SA=(--hook blocks.2.hook_resid_post --d-sae 128 --arch topk --k 8 --lr 2e-3 --batch 256 --buffer-mult 4
    --steps 14 --save-every 7 --threads 2 --quiet)
"$LUMEN" sae train "$MODEL" "$TEXT" --ctx 64 --fwd-batch 8 --max-tokens 5000 "${SA[@]}" -o "$TMP/fly" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 0 ] && ok || bad "train on the fly: rc $rc $(cat "$TMP/o")"
"$LUMEN" sae train --acts "$TMP/acts" "${SA[@]}" -o "$TMP/sh" --json >"$TMP/j" 2>"$TMP/e"; rc=$?
[ $rc -eq 0 ] && grep -q '"steps":14' "$TMP/j" && ok || bad "train --acts: rc $rc $(cat "$TMP/e")"
cmp -s "$TMP/fly/sae_weights.safetensors" "$TMP/sh/sae_weights.safetensors" && ok || bad "--acts and the model on the fly differ"
grep -q '"model_name": *"[^"]*lumen-tiny"' "$TMP/sh/cfg.json" && grep -q '"context_size": *64' "$TMP/sh/cfg.json" \
  && ok || bad "--acts cfg.json metadata: $(cat "$TMP/sh/cfg.json")"
# resume from the middle checkpoint of the shard source (which records the position in the shards)
mkdir -p "$TMP/sh2/ckpt" && cp -r "$TMP/sh/ckpt/step_00000007" "$TMP/sh2/ckpt/" && echo step_00000007 >"$TMP/sh2/ckpt/latest"
"$LUMEN" sae train --acts "$TMP/acts" "${SA[@]}" -o "$TMP/sh2" --json >"$TMP/j" 2>"$TMP/e"; rc=$?
[ $rc -eq 0 ] && grep -q '"resumed_from":7' "$TMP/j" && cmp -s "$TMP/sh/sae_weights.safetensors" "$TMP/sh2/sae_weights.safetensors" \
  && ok || bad "--acts resume: rc $rc $(cat "$TMP/e" "$TMP/j")"
grep -q '"src_pos"' "$TMP/sh/ckpt/step_00000007/trainer_state.json" && ok || bad "no src_pos in the trainer state"
# with MODEL (checked against the shards), then usage and input errors; none leaves an SAE behind
"$LUMEN" sae train "$MODEL" --acts "$TMP/acts" "${SA[@]}" -o "$TMP/shm" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 0 ] && ok || bad "train MODEL --acts: rc $rc $(cat "$TMP/o")"
"$LUMEN" sae train "$MODEL" "$TEXT" --acts "$TMP/acts" "${SA[@]}" -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "not both" "$TMP/o" && ok || bad "FILE with --acts: rc $rc"
"$LUMEN" sae train --acts "$TMP/acts" --ctx 32 "${SA[@]}" -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q -- "--ctx" "$TMP/o" && ok || bad "--ctx with --acts: rc $rc"
"$LUMEN" sae train "${SA[@]}" -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && ok || bad "no source: rc $rc"
"$LUMEN" sae train --acts "$TMP/acts" "${SA[@]}" --hook blocks.3.hook_mlp_out -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "manifest.json: hook 'blocks.3.hook_mlp_out' was not harvested" "$TMP/o" && ok || bad "hook not harvested: rc $rc $(cat "$TMP/o")"
"$LUMEN" sae train --acts "$TMP/nowhere" "${SA[@]}" -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "nowhere/manifest.json" "$TMP/o" && ok || bad "missing manifest: rc $rc $(cat "$TMP/o")"
cp -r "$TMP/acts" "$TMP/acts_bad"
head -c 3000 "$TMP/acts/shard_00003.safetensors" >"$TMP/acts_bad/shard_00003.safetensors"
"$LUMEN" sae train --acts "$TMP/acts_bad" "${SA[@]}" -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "shard_00003.safetensors" "$TMP/o" && ok || bad "truncated shard: rc $rc $(cat "$TMP/o")"
sed 's/"shards_done": 5/"shards_done": 3/' "$TMP/acts/manifest.json" >"$TMP/acts_bad/manifest.json"
"$LUMEN" sae train --acts "$TMP/acts_bad" "${SA[@]}" -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "incomplete (3 of 5 shards)" "$TMP/o" && ok || bad "incomplete harvest: rc $rc $(cat "$TMP/o")"
[ ! -e "$TMP/bad/sae_weights.safetensors" ] && ok || bad "a failed run left an SAE"

# --arch jumprelu: trains, saves a threshold tensor, and `sae eval` loads the result
"$LUMEN" sae train --acts "$TMP/acts" --hook blocks.2.hook_resid_post --d-sae 64 --arch jumprelu --l0 1 --bandwidth 0.1 \
  --init-threshold 0.1 --lr 2e-3 --batch 128 --buffer-mult 4 --steps 20 --threads 2 --quiet -o "$TMP/jr" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q '"architecture": *"jumprelu"' "$TMP/jr/cfg.json" && grep -q threshold "$TMP/jr/sae_weights.safetensors" \
  && ok || bad "jumprelu train: rc $rc $(cat "$TMP/o")"
"$LUMEN" sae eval "$MODEL" "$TMP/jr" "$TEXT" --ctx 32 --max-tokens 200 --threads 2 --json >"$TMP/j" 2>"$TMP/e"; rc=$?
[ $rc -eq 0 ] && grep -q '"l0":' "$TMP/j" && ok || bad "sae eval of a jumprelu SAE: rc $rc $(cat "$TMP/e")"
"$LUMEN" sae train --acts "$TMP/acts" "${SA[@]}" --l0 2 -o "$TMP/bad" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "jumprelu" "$TMP/o" && ok || bad "--l0 without jumprelu: rc $rc"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
