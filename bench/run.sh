#!/bin/sh
# run.sh - `make bench`: lumen vs PyTorch on the same random GPT-2-small-sized Llama.
#
# Runs build/bench_llama (lumen, C) and bench/bench_llama.py (PyTorch) with the same
# thread count, prints them side by side with the ratio lumen / pytorch, and writes
# the results to $BUILD/bench_results.json.
#
#   sh bench/run.sh [--threads N]      (default 2; also THREADS=N)
#
# Environment: BUILD (build directory, default build; `make bench` builds it),
# PYTHON (a Python with torch; default .venv/bin/python if present, else python3).
set -e

cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS=$2; shift 2 ;;
        --threads=*) THREADS=${1#--threads=}; shift ;;
        *) echo "usage: $0 [--threads N]" >&2; exit 2 ;;
    esac
done
BUILD=${BUILD:-build}
BIN="$BUILD/bench_llama"

if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "bench: '$PYTHON' cannot import torch, which the PyTorch side of the benchmark needs." >&2
    echo "  Either run 'make crosscheck' (creates .venv with tools/requirements.txt), or" >&2
    echo "  'pip install -r tools/requirements.txt', or set PYTHON=/path/to/python-with-torch." >&2
    exit 1
fi
if [ ! -x "$BIN" ]; then
    echo "bench: $BIN not found; build first (make bench, or cmake --build $BUILD)" >&2
    exit 1
fi

# Each side gets the same thread count, through its own knob and the usual variables.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left as the environment has them.
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

echo "== lumen ($BIN, $THREADS threads)"
LUMEN_JSON=$("$BIN" --threads "$THREADS")
echo "$LUMEN_JSON"
echo "== pytorch ($PYTHON bench/bench_llama.py, $THREADS threads)"
TORCH_JSON=$("$PYTHON" bench/bench_llama.py --threads "$THREADS")
echo "$TORCH_JSON"

"$PYTHON" - "$LUMEN_JSON" "$TORCH_JSON" "$BUILD/bench_results.json" <<'PY'
import json, os, sys

lumen, torch_ = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = sys.argv[3]
print()
print("Llama 12L d768 12H ffn2048 vocab32000 f32, %d threads" % lumen["threads"])
print("%-22s %12s %12s %9s" % ("", "lumen", "pytorch", "ratio"))
ratio = {}
for key, label in (("prefill_tok_s", "prefill (512) tok/s"), ("decode_tok_s", "decode (128) tok/s")):
    r = lumen[key] / torch_[key]
    ratio[key] = round(r, 3)
    print("%-22s %12.1f %12.1f %8.2fx" % (label, lumen[key], torch_[key], r))
res = {"model": {"n_layers": 12, "dim": 768, "n_heads": 12, "hidden_dim": 2048, "vocab": 32000,
                 "dtype": "f32", "prompt": 512, "new_tokens": 128},
       "lumen": lumen, "pytorch": torch_, "ratio_lumen_over_pytorch": ratio}
tmp = "%s.tmp.%d" % (out, os.getpid())
with open(tmp, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
print("\nwrote %s" % out)
PY
