#!/bin/bash
# test_cli.sh - the `lumen` command end to end: golden greedy output, JSON output, and broken
# inputs answered with a clear error naming the file, exit code 1, and no crash.
set -u
LUMEN=${LUMEN_BIN:?LUMEN_BIN not set}
A=${LUMEN_ASSETS:-../shared/assets}
M=$A/models/stories260K
if [ ! -f "$M/stories260K.bin" ]; then
  echo "SKIP: shared assets not found at $A"
  exit 77
fi
TMP=$(mktemp -d "${LUMEN_TMP:-/tmp}/clitest.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# sanitizer reports must not hide behind the CLI's own exit code 1
export ASAN_OPTIONS="exitcode=86:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1:${UBSAN_OPTIONS:-}"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# golden greedy story, from both formats
"$LUMEN" generate "$M/stories260K.bin" --tokenizer "$M/tok512.bin" -p "" -n 256 -t 0 >"$TMP/a.txt" 2>"$TMP/err" &&
  cmp -s "$TMP/a.txt" "$M/stories260K_greedy_256.txt" && ok || bad "llama2.c greedy output differs"
"$LUMEN" generate "$M/stories260K.gguf" -p "" -n 256 -t 0 --threads 1 >"$TMP/b.txt" 2>"$TMP/err" &&
  cmp -s "$TMP/b.txt" "$M/stories260K_greedy_256.txt" && ok || bad "GGUF greedy output differs"

# seeded sampling is reproducible, and differs from greedy
"$LUMEN" generate "$M/stories260K.gguf" -p "Once upon" -n 40 -t 1.0 --top-p 0.9 --seed 7 >"$TMP/s1.txt" 2>/dev/null
"$LUMEN" generate "$M/stories260K.gguf" -p "Once upon" -n 40 -t 1.0 --top-p 0.9 --seed 7 >"$TMP/s2.txt" 2>/dev/null
cmp -s "$TMP/s1.txt" "$TMP/s2.txt" && ok || bad "same seed gave different text"
grep -q "^Once upon" "$TMP/s1.txt" && ok || bad "prompt not echoed"

# JSON results
out=$("$LUMEN" info "$M/stories260K.bin" --json)
case $out in *'"n_layers":5'*'"vocab_size":512'*'"parameters":'*) ok ;; *) bad "info --json: $out" ;; esac
out=$("$LUMEN" tokenize "$M/tok512.bin" "Once upon a time" --json)
case $out in '{"ids":['*'"pieces":['*) ok ;; *) bad "tokenize --json: $out" ;; esac
out=$("$LUMEN" tokenize "$A/tokenizers/llama-spm/ggml-vocab-llama-spm.gguf" "Hello world" --json)
[ "$out" = '{"ids":[15043,3186],"pieces":["▁Hello","▁world"]}' ] && ok || bad "tokenize llama vocab: $out"
out=$("$LUMEN" generate "$M/stories260K.gguf" -p "" -n 5 -t 0 --json)
case $out in *'"text":"Once upon a time'*'"generated_tokens":5'*) ok ;; *) bad "generate --json: $out" ;; esac
"$LUMEN" info --help | grep -q usage && ok || bad "info --help"
"$LUMEN" generate --help | grep -q -- --top-p && ok || bad "generate --help"

# expect_error CODE NEEDLE CMD...: exit code CODE and NEEDLE in the message
expect_error() {
  local code=$1 needle=$2
  shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ $rc -ne "$code" ]; then
    bad "expected exit $code, got $rc: $* ($(head -c 300 "$TMP/err"))"
  elif ! grep -qF -- "$needle" "$TMP/err"; then
    bad "message lacks '$needle': $(head -c 300 "$TMP/err")"
  else
    ok
  fi
}
expect_error 1 "$TMP/none.bin" "$LUMEN" info "$TMP/none.bin"
expect_error 2 "missing MODEL" "$LUMEN" generate -p hi
expect_error 2 "-t expects a number" "$LUMEN" generate "$M/stories260K.bin" -p "" -t abc
expect_error 2 "unknown command" "$LUMEN" frobnicate
expect_error 1 "no tokenizer" "$LUMEN" generate "$M/stories260K.bin" -p "hi"
expect_error 1 "context" "$LUMEN" generate "$M/stories260K.bin" --tokenizer "$M/tok512.bin" -p "" -n 100000
# truncated and lying files, every format
for f in stories260K.bin stories260K.gguf tok512.bin; do
  size=$(stat -c %s "$M/$f")
  for cut in 0 3 20 101 $((size / 3)) $((size - 1)); do
    head -c "$cut" "$M/$f" >"$TMP/cut_$f"
    case $f in
      tok512.bin) expect_error 1 "$TMP/cut_$f" "$LUMEN" tokenize "$TMP/cut_$f" "hello" ;;
      *) expect_error 1 "$TMP/cut_$f" "$LUMEN" info "$TMP/cut_$f" ;;
    esac
  done
done
printf 'GGUF\x01\x00\x00\x00' >"$TMP/v1.gguf"
expect_error 1 "$TMP/v1.gguf" "$LUMEN" info "$TMP/v1.gguf"
printf 'not a model at all' >"$TMP/junk.safetensors"
expect_error 1 "$TMP/junk.safetensors" "$LUMEN" info "$TMP/junk.safetensors"
# unknown architecture (general.architecture patched from llama to bloom)
patch_arch() { # replace the first "llama" after general.architecture in a copy
  local off
  off=$(grep -obaF "general.architecture" "$1" | head -1 | cut -d: -f1)
  off=$(tail -c +$((off + 1)) "$1" | grep -obaF "llama" | head -1 | cut -d: -f1)
  off=$(( $(grep -obaF "general.architecture" "$1" | head -1 | cut -d: -f1) + off ))
  cp "$1" "$2"
  printf 'bloom' | dd of="$2" bs=1 seek="$off" conv=notrunc status=none
}
patch_arch "$M/stories260K.gguf" "$TMP/bloom.gguf"
expect_error 1 "architecture 'bloom' is not supported" "$LUMEN" info "$TMP/bloom.gguf"
# eval: stories260K knows TinyStories far better than Tolstoy
T=$A/text
ce_ts=$("$LUMEN" eval "$M/stories260K.bin" "$T/tinystories_train_head_197k.txt" --tokenizer "$M/tok512.bin" --ctx 128 --max-tokens 4096 --json | sed -n 's/.*"cross_entropy":\([0-9.e+-]*\).*/\1/p')
ce_wp=$("$LUMEN" eval "$M/stories260K.bin" "$T/war-and-peace.txt" --tokenizer "$M/tok512.bin" --ctx 128 --max-tokens 4096 --json | sed -n 's/.*"cross_entropy":\([0-9.e+-]*\).*/\1/p')
awk -v a="$ce_ts" -v b="$ce_wp" 'BEGIN { exit !(a > 0.5 && a < 2.0 && b > a + 0.5) }' && ok || bad "eval cross-entropies: tinystories $ce_ts, war and peace $ce_wp"

# convert to the Hugging Face layout; the converted model tells the same story
"$LUMEN" convert "$M/stories260K.bin" -o "$TMP/hf260k" >/dev/null 2>&1 && ok || bad "convert failed"
[ -f "$TMP/hf260k/config.json" ] && [ -f "$TMP/hf260k/model.safetensors" ] && ok || bad "convert wrote no files"
"$LUMEN" generate "$TMP/hf260k" --tokenizer "$M/tok512.bin" -p "" -n 256 -t 0 >"$TMP/c.txt" 2>/dev/null &&
  cmp -s "$TMP/c.txt" "$M/stories260K_greedy_256.txt" && ok || bad "converted model's greedy output differs"
out=$("$LUMEN" info "$TMP/hf260k" --json)
case $out in *'"format":"hf"'*'"n_layers":5'*) ok ;; *) bad "info on converted dir: $out" ;; esac

# activations: shards + manifest, and a second run resumes (writes nothing new)
"$LUMEN" activations "$M/stories260K.bin" "$T/tinystories_train_head_197k.txt" --tokenizer "$M/tok512.bin" \
  --hook blocks.2.hook_resid_post --hook hook_embed --ctx 64 --max-tokens 1000 --shard-tokens 256 -o "$TMP/acts" --json >"$TMP/a1.json" 2>/dev/null
grep -q '"shards_written":4' "$TMP/a1.json" && [ -f "$TMP/acts/shard_00003.safetensors" ] && grep -q '"complete": true' "$TMP/acts/manifest.json" && ok || bad "activations: $(cat "$TMP/a1.json")"
"$LUMEN" activations "$M/stories260K.bin" "$T/tinystories_train_head_197k.txt" --tokenizer "$M/tok512.bin" \
  --hook blocks.2.hook_resid_post --hook hook_embed --ctx 64 --max-tokens 1000 --shard-tokens 256 -o "$TMP/acts" --json >"$TMP/a2.json" 2>/dev/null
grep -q '"shards_written":0,"shards_resumed":4' "$TMP/a2.json" && ok || bad "activations resume: $(cat "$TMP/a2.json")"
expect_error 1 "different job" "$LUMEN" activations "$M/stories260K.bin" "$T/tinystories_train_head_197k.txt" --tokenizer "$M/tok512.bin" --hook hook_embed --ctx 64 --max-tokens 1000 -o "$TMP/acts"
expect_error 1 "unknown hook point 'blocks.0.hook_bogus'" "$LUMEN" activations "$M/stories260K.bin" "$T/cs336_address.txt" --tokenizer "$M/tok512.bin" --hook blocks.0.hook_bogus -o "$TMP/acts2"
expect_error 1 "out of range" "$LUMEN" activations "$M/stories260K.bin" "$T/cs336_address.txt" --tokenizer "$M/tok512.bin" --hook blocks.5.hook_resid_post -o "$TMP/acts3"

# broken Hugging Face directories
F=${LUMEN_FIXTURES:-tests/fixtures}/hf
mkhf() { rm -rf "$TMP/$1"; cp -r "$F/llama" "$TMP/$1"; chmod -R u+w "$TMP/$1"; }
mkhf badjson; printf '{"model_type": "llama", ' >"$TMP/badjson/config.json"
expect_error 1 "$TMP/badjson/config.json: invalid JSON" "$LUMEN" info "$TMP/badjson"
mkhf badtype; sed -i 's/"model_type": "llama"/"model_type": "mamba"/' "$TMP/badtype/config.json"
expect_error 1 "model_type 'mamba' is not supported" "$LUMEN" info "$TMP/badtype"
mkhf badshape; sed -i 's/"intermediate_size": 64/"intermediate_size": 65/' "$TMP/badshape/config.json"
expect_error 1 "has shape [64, 32], expected [65, 32]" "$LUMEN" info "$TMP/badshape"
mkhf trunc; head -c 5000 "$F/llama/model.safetensors" >"$TMP/trunc/model.safetensors"
expect_error 1 "$TMP/trunc/model.safetensors" "$LUMEN" info "$TMP/trunc"
mkhf liehdr; printf '\xff\xff\xff\x00\x00\x00\x00\x00' | dd of="$TMP/liehdr/model.safetensors" bs=1 conv=notrunc status=none
expect_error 1 "$TMP/liehdr/model.safetensors" "$LUMEN" info "$TMP/liehdr"
rm -rf "$TMP/noshard"; cp -r "$F/llama_tied" "$TMP/noshard"; chmod -R u+w "$TMP/noshard"; rm -f "$TMP/noshard"/model-00002-*.safetensors
expect_error 1 "model-00002" "$LUMEN" info "$TMP/noshard"
mkhf nomodel; rm -f "$TMP/nomodel/model.safetensors"
expect_error 1 "$TMP/nomodel" "$LUMEN" info "$TMP/nomodel"

# no half-written output is possible: generate writes only to stdout; nothing left in TMP but ours
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
