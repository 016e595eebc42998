#!/bin/bash
# test_sae_features_cli.sh - `lumen sae features` on the shipped model with a quickly trained SAE (the
# output files, text cards, the browser page, bad input refused with nothing written), `lumen
# steer` taking the max activation from those statistics (or refusing stale ones), `--scale 1`
# reproducing the unsteered text exactly, and SAE training + eval giving the same numbers twice.
set -u
LUMEN=${LUMEN_BIN:?LUMEN_BIN not set}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=$ROOT/models/lumen-tiny
TEXT=$ROOT/data/calendar_train.txt
if [ ! -f "$TEXT" ] || [ ! -f "$MODEL/config.json" ]; then
  echo "SKIP: $TEXT or $MODEL not found"
  exit 77
fi
mkdir -p "${LUMEN_TMP:-/tmp}"
TMP=$(mktemp -d "${LUMEN_TMP:-/tmp}/saefeat.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS="exitcode=86:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
# the value of a top-level string key in one-line JSON
jstr() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$2"; }

TRAIN=(--hook blocks.1.hook_resid_post --d-sae 96 --arch relu --l1 2 --lr 2e-3 --ctx 64 --batch 256
       --buffer-mult 4 --steps 24 --max-tokens 8000 --threads 2 --quiet)
"$LUMEN" sae train "$MODEL" "$TEXT" "${TRAIN[@]}" -o "$TMP/sae" >"$TMP/o" 2>&1 && ok || bad "train: $(cat "$TMP/o")"

# training and evaluation are reproducible: a second run into another directory gives the same
# weights and the same eval numbers
"$LUMEN" sae train "$MODEL" "$TEXT" "${TRAIN[@]}" -o "$TMP/sae2" >"$TMP/o" 2>&1 && ok || bad "train 2: $(cat "$TMP/o")"
cmp -s "$TMP/sae/sae_weights.safetensors" "$TMP/sae2/sae_weights.safetensors" && ok || bad "two trainings differ"
for s in sae sae2; do
  "$LUMEN" sae eval "$MODEL" "$TMP/$s" "$TEXT" --ctx 64 --batch 4 --max-tokens 1500 --threads 2 --json \
    | sed 's/"seconds":[^,}]*//' >"$TMP/eval_$s.json"
done
grep -q '"ce_loss_recovered":' "$TMP/eval_sae.json" && cmp -s "$TMP/eval_sae.json" "$TMP/eval_sae2.json" && ok \
  || bad "eval differs: $(cat "$TMP/eval_sae.json") vs $(cat "$TMP/eval_sae2.json")"

# help and usage
"$LUMEN" sae >"$TMP/o" 2>&1; [ $? -eq 2 ] && grep -q "features MODEL SAE FILE" "$TMP/o" && ok || bad "sae usage lacks features"
"$LUMEN" sae features --help >"$TMP/o" 2>&1 && grep -q "index.html" "$TMP/o" && grep -q "feature_stats.safetensors" "$TMP/o" \
  && ok || bad "sae features --help"
"$LUMEN" sae features "$MODEL" "$TMP/sae" >"$TMP/o" 2>&1; [ $? -eq 2 ] && ok || bad "missing FILE is a usage error"
"$LUMEN" sae features "$MODEL" "$TMP/sae" "$TEXT" --show 1,x >"$TMP/o" 2>&1; [ $? -eq 2 ] && ok || bad "bad --show"

# the run: default output directory SAE/features, text cards for --show
"$LUMEN" sae features "$MODEL" "$TMP/sae" "$TEXT" --tokens 3000 --threads 2 --quiet --show 0,5 >"$TMP/out" 2>"$TMP/e"
rc=$?
[ $rc -eq 0 ] && ok || bad "features: rc $rc $(cat "$TMP/e")"
F=$TMP/sae/features
for f in features.json index.html feature_stats.safetensors; do
  [ -s "$F/$f" ] && ok || bad "missing $F/$f"
done
ls "$F" | grep -q tmp && bad "temporary files left in $F" || ok
grep -q "^feature 0: density" "$TMP/out" && grep -q "^feature 5: density" "$TMP/out" && ok || bad "cards: $(cat "$TMP/out")"
grep -q "promotes:" "$TMP/out" && grep -q "neighbours:" "$TMP/out" && ok || bad "card parts"
grep -q "\[\[.*\]\]" "$TMP/out" && ok || bad "no marked activating token in the cards"
grep -q "browser: $F/index.html" "$TMP/out" && ok || bad "browser path not printed"
# features.json: the schema's keys, one entry per latent
J=$F/features.json
grep -q '"format":"lumen-sae-features"' "$J" && grep -q '"hook":"blocks.1.hook_resid_post"' "$J" && ok || bad "features.json header"
[ "$(grep -o '"neighbours":' "$J" | wc -l)" -eq 96 ] && ok || bad "features.json: not 96 latents"
for k in density max_act mean_act top intervals logits_top logits_bottom neighbours tokens acts; do
  grep -q "\"$k\":" "$J" && ok || bad "features.json lacks $k"
done
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["features"])==96' "$J" && ok || bad "features.json does not parse"
fi
# index.html: self-contained, data and cards' code inside, exactly two script elements closed
H=$F/index.html
grep -q '<script id="data" type="application/json">' "$H" && grep -q 'function show(' "$H" && ok || bad "page lacks data or cards"
[ "$(grep -o '</script>' "$H" | wc -l)" -eq 2 ] && ok || bad "page: stray </script>"
grep -q -E 'src=|href=|https?:' "$H" && bad "page refers to the network" || ok
# the page's script draws the list and a card (under node, with a stand-in DOM, when node exists)
if command -v node >/dev/null 2>&1; then
  node "$ROOT/tests/sae_page_check.js" "$H" 5 >"$TMP/page" 2>&1 && grep -q "^card feature 5$" "$TMP/page" && ok \
    || bad "page script: $(cat "$TMP/page")"
  grep -q "^rows [1-9]" "$TMP/page" && ok || bad "page list empty: $(cat "$TMP/page")"
  if ! sed -n '/^feature 5:/,/^$/p' "$TMP/out" | grep -q "dead on this text"; then
    grep -q "^contexts [1-9]" "$TMP/page" && grep -q '^marked "' "$TMP/page" && ok || bad "page card: $(cat "$TMP/page")"
  fi
fi
# --json
"$LUMEN" sae features "$MODEL" "$TMP/sae" "$TEXT" --tokens 500 --threads 2 --quiet --json -o "$TMP/f2" >"$TMP/j" 2>"$TMP/e" \
  && grep -q '"d_sae":96' "$TMP/j" && grep -q '"tokens":500' "$TMP/j" && ok || bad "--json: $(cat "$TMP/j" "$TMP/e")"

# bad input: a clear message naming the file, exit 1, nothing written
: >"$TMP/empty.txt"
"$LUMEN" sae features "$MODEL" "$TMP/sae" "$TMP/empty.txt" -o "$TMP/bad1" --quiet >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "empty.txt: no tokens" "$TMP/o" && [ ! -e "$TMP/bad1" ] && ok || bad "empty text: rc $rc $(cat "$TMP/o")"
"$LUMEN" sae features "$MODEL" "$TMP/sae" "$TEXT" --hook blocks.9.hook_resid_post -o "$TMP/bad2" --quiet >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "lumen-tiny" "$TMP/o" && grep -q "blocks.9" "$TMP/o" && [ ! -e "$TMP/bad2" ] && ok \
  || bad "missing hook: rc $rc $(cat "$TMP/o")"
SMALL=$ROOT/tests/fixtures/sae/standard
if [ -f "$SMALL/cfg.json" ]; then
  "$LUMEN" sae features "$MODEL" "$SMALL" "$TEXT" -o "$TMP/bad3" --quiet >"$TMP/o" 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -q "d_in is 16" "$TMP/o" && grep -q "width 192" "$TMP/o" && [ ! -e "$TMP/bad3" ] && ok \
    || bad "d_in mismatch: rc $rc $(cat "$TMP/o")"
fi
"$LUMEN" sae features "$MODEL" "$TMP/sae" "$TMP/none.txt" -o "$TMP/bad4" --quiet >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "none.txt" "$TMP/o" && ok || bad "missing text: rc $rc"

# steer: the max activation from SAE/features by default, --features DIR, --max-act, the prompt
P="Three days from Monday is"
"$LUMEN" steer "$MODEL" "$TMP/sae" -p "$P" --feature 0 --clamp 2 -n 4 --threads 2 --json >"$TMP/j" 2>"$TMP/e"
[ $? -eq 0 ] && [ "$(jstr max_act_source "$TMP/j")" = features ] && grep -q "\"max_act_file\":\"$F/feature_stats.safetensors\"" "$TMP/j" \
  && ok || bad "steer default stats: $(cat "$TMP/j" "$TMP/e")"
"$LUMEN" steer "$MODEL" "$TMP/sae" -p "$P" --feature 0 --clamp 2 -n 4 --threads 2 >"$TMP/o" 2>&1 \
  && grep -q "from $F/feature_stats.safetensors" "$TMP/o" && ok || bad "steer does not print its source: $(cat "$TMP/o")"
"$LUMEN" steer "$MODEL" "$TMP/sae" -p "$P" --feature 0 --clamp 2 -n 4 --max-act 3 --threads 2 --json >"$TMP/j" 2>&1 \
  && [ "$(jstr max_act_source "$TMP/j")" = option ] && grep -q '"max_act":3' "$TMP/j" && ok || bad "steer --max-act: $(cat "$TMP/j")"
"$LUMEN" steer "$MODEL" "$TMP/sae" -p "$P" --feature 0 --clamp 2 -n 4 --features "$TMP/nowhere" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "nowhere/feature_stats.safetensors" "$TMP/o" && ok || bad "steer --features missing: rc $rc"
# stale statistics (of another SAE) are refused
"$LUMEN" sae train "$MODEL" "$TEXT" "${TRAIN[@]}" --seed 9 -o "$TMP/sae3" >"$TMP/o" 2>&1 && ok || bad "train 3"
"$LUMEN" steer "$MODEL" "$TMP/sae3" -p "$P" --feature 0 --clamp 2 -n 4 --features "$F" >"$TMP/o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "another SAE" "$TMP/o" && ok || bad "stale statistics not refused: rc $rc $(cat "$TMP/o")"
# without statistics: the prompt
"$LUMEN" steer "$MODEL" "$TMP/sae2" -p "$P" --feature 0 --add 1 -n 4 --threads 2 --json >"$TMP/j" 2>"$TMP/e"; rc=$?
if [ $rc -eq 0 ]; then
  [ "$(jstr max_act_source "$TMP/j")" = prompt ] && ok || bad "steer fallback source: $(cat "$TMP/j")"
else
  grep -q "does not fire on the prompt" "$TMP/e" && ok || bad "steer fallback: rc $rc $(cat "$TMP/e")"
fi

# --scale 1 clamps every position to its own value: with the error term kept the splice is
# lossless, so the steered text is the unsteered one, for every latent tried
for id in 0 3 17 42 95; do
  "$LUMEN" steer "$MODEL" "$TMP/sae" -p "Once upon a time" --feature $id --scale 1 -n 24 --threads 2 --json >"$TMP/j" 2>"$TMP/e"
  d=$(jstr default "$TMP/j")
  s=$(jstr steered "$TMP/j")
  [ -n "$d" ] && [ "$d" = "$s" ] && ok || bad "--scale 1 changed feature $id: '$d' vs '$s' $(cat "$TMP/e")"
done
# and --scale of a strongly firing latent by a large factor does change it
"$LUMEN" steer "$MODEL" "$TMP/sae" -p "$P" --feature 0 --scale 40 -n 8 --threads 2 --json >"$TMP/j" 2>"$TMP/e"
[ "$(jstr mode "$TMP/j")" = scale ] && ok || bad "--scale json: $(cat "$TMP/j" "$TMP/e")"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
