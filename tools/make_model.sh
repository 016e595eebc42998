#!/bin/sh
# make_model.sh - `make model`: reproduces the model that ships in models/lumen-tiny/ from the
# shared text corpora and the generated calendar sentences, with lumen alone.
#   1. corpus: the first 12,000 Brown Corpus sentences (one document each), the first 20,000
#      lines of War and Peace, the TinyStories sample, and data/calendar_train.txt eight times
#      (one sentence per document), so that calendar sentences are about half of the tokens
#   2. lumen bpe-train: byte-level BPE, 4096 tokens
#   3. lumen tokenize-data: token shards with a 5% validation split of documents
#   4. lumen train: Llama architecture (see models/README.md for the hyper-parameters)
#   5. the result is copied to models/lumen-tiny/ and evaluated (validation loss, calendar accuracy)
# Environment: ASSETS (default ../shared/assets), BUILD (default build), WORK (default
# $BUILD/model), STEPS (default 3000), THREADS (default 2).
set -e
cd "$(dirname "$0")/.."
ASSETS=${ASSETS:-../shared/assets}
BUILD=${BUILD:-build}
WORK=${WORK:-$BUILD/model}
STEPS=${STEPS:-3000}
THREADS=${THREADS:-2}
LUMEN=$BUILD/lumen
T=$ASSETS/text
for f in brown.txt war-and-peace.txt tinystories_train_head_197k.txt; do
  [ -f "$T/$f" ] || { echo "make model: $T/$f not found (set ASSETS=DIR)" >&2; exit 1; }
done
[ -f data/calendar_train.txt ] || python3 tools/make_calendar.py
mkdir -p "$WORK/corpus"
head -n 12000 "$T/brown.txt" | awk '{print; print ""}' >"$WORK/corpus/brown.txt"
head -n 20000 "$T/war-and-peace.txt" >"$WORK/corpus/war-and-peace.txt"
cp "$T/tinystories_train_head_197k.txt" "$WORK/corpus/"
chmod u+w "$WORK/corpus/"*.txt
for i in 1 2 3 4 5 6 7 8; do awk '{print; print ""}' data/calendar_train.txt; done >"$WORK/corpus/calendar.txt"

echo "== bpe-train"
"$LUMEN" bpe-train "$WORK/corpus/"*.txt --vocab-size 4096 -o "$WORK/tokenizer.json" --quiet
echo "== tokenize-data"
"$LUMEN" tokenize-data "$WORK/tokenizer.json" "$WORK/corpus/"*.txt -o "$WORK/data" --seed 1 --quiet
echo "== train ($STEPS steps, $THREADS threads)"
"$LUMEN" train --data "$WORK/data" --tokenizer "$WORK/tokenizer.json" -o "$WORK/train" \
  --arch llama --dim 192 --layers 4 --heads 6 --kv-heads 2 --ffn 512 --ctx 128 \
  --batch 16 --steps "$STEPS" --warmup 100 --lr 3e-3 --min-lr 3e-4 --wd 0.1 --clip 1.0 \
  --eval-every 250 --eval-batches 16 --save-every 250 --seed 1337 --threads "$THREADS" --json >"$WORK/train.json"
cat "$WORK/train.json"
mkdir -p models/lumen-tiny
cp "$WORK/train/config.json" "$WORK/train/model.safetensors" "$WORK/train/tokenizer.json" models/lumen-tiny/
cp "$WORK/train/train_log.jsonl" "$WORK/train_log.jsonl"
echo "== evaluation"
"$LUMEN" mc-eval models/lumen-tiny data/calendar_eval.json --json | tee "$WORK/calendar_eval.json"
