#!/bin/sh
# run.sh - `make bench`: lumen vs PyTorch on the same random models, side by side.
#
# Each benchmark is built by lumen (build/bench_*, C) and by PyTorch (bench/bench_*.py) with the
# same thread count: a GPT-2-small-sized Llama (bench_llama), GPT-2 small itself (bench_gpt2),
# SAE training steps (bench_sae) and the linearity profile of GPT-2 small against llm-microscope
# (bench_linearity). Prints each pair side by side with the ratio, and writes all results to
# $BUILD/bench_results.json.
#
#   sh bench/run.sh [--threads N] [--model llama|gpt2|sae|linearity|all]   (defaults 2 and all;
#                                                                          also THREADS=N)
#
# Environment: BUILD (build directory, default build; `make bench` builds it),
# PYTHON (a Python with torch; default .venv/bin/python if present, else python3).
set -e

cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
MODEL=all
usage() { echo "usage: $0 [--threads N] [--model llama|gpt2|sae|linearity|all]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) [ $# -ge 2 ] || usage; THREADS=$2; shift 2 ;;
        --threads=*) THREADS=${1#--threads=}; shift ;;
        --model) [ $# -ge 2 ] || usage; MODEL=$2; shift 2 ;;
        --model=*) MODEL=${1#--model=}; shift ;;
        *) usage ;;
    esac
done
case "$MODEL" in
    llama) MODELS=llama ;;
    gpt2) MODELS=gpt2 ;;
    sae) MODELS=sae ;;
    linearity) MODELS=linearity ;;
    all) MODELS="llama gpt2 sae linearity" ;;
    *) usage ;;
esac
BUILD=${BUILD:-build}

if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "bench: '$PYTHON' cannot import torch, which the PyTorch side of the benchmark needs." >&2
    echo "  Either run 'make crosscheck' (creates .venv with tools/requirements.txt), or" >&2
    echo "  'pip install -r tools/requirements.txt', or set PYTHON=/path/to/python-with-torch." >&2
    exit 1
fi
for m in $MODELS; do
    if [ ! -x "$BUILD/bench_$m" ]; then
        echo "bench: $BUILD/bench_$m not found; build first (make bench, or cmake --build $BUILD)" >&2
        exit 1
    fi
done

# Each side gets the same thread count, through its own knob and the usual variables.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left as the environment has them.
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

# One JSON line per side and model (bench_sae prints one per SAE), kept in a temporary folder; a
# lumen binary exits non-zero when its self-check fails, which stops the run here (set -e)
# instead of reporting void numbers.
OUTDIR=$(mktemp -d)
trap 'rm -rf "$OUTDIR"' EXIT
for m in $MODELS; do
    echo "== lumen ($BUILD/bench_$m, $THREADS threads)"
    "$BUILD/bench_$m" --threads "$THREADS" > "$OUTDIR/$m.lumen"
    cat "$OUTDIR/$m.lumen"
    echo "== pytorch ($PYTHON bench/bench_$m.py, $THREADS threads)"
    "$PYTHON" "bench/bench_$m.py" --threads "$THREADS" > "$OUTDIR/$m.torch"
    cat "$OUTDIR/$m.torch"
done

"$PYTHON" - "$OUTDIR" "$BUILD/bench_results.json" "$THREADS" <<'PY'
import json, os, sys

outdir, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])


def lines(name, side):
    """The JSON lines one side printed for one benchmark ([] if it was not run)."""
    path = os.path.join(outdir, "%s.%s" % (name, side))
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def one(name, side):
    got = lines(name, side)
    return got[0] if got else {}


llama_l, llama_t, gpt2_l, gpt2_t = one("llama", "lumen"), one("llama", "torch"), one("gpt2", "lumen"), one("gpt2", "torch")
res = {"threads": threads}


def table(title, rows, lumen, torch_):
    """rows: (label, lumen key, pytorch key, aim or None); returns {lumen key: ratio}."""
    print()
    print(title)
    print("%-34s %10s %10s %9s  %s" % ("", "lumen", "pytorch", "ratio", "aim"))
    ratio = {}
    for label, lk, tk, aim in rows:
        if lk not in lumen or tk not in torch_:
            continue
        r = lumen[lk] / torch_[tk]
        ratio[lk] = round(r, 3)
        mark = "" if aim is None else ">= %.1fx %s" % (aim, "met" if r >= aim else "MISSED")
        print("%-34s %10.1f %10.1f %8.3fx  %s" % (label, lumen[lk], torch_[tk], r, mark))
    return ratio


if llama_l:
    ratio = table("Llama 12L d768 12H ffn2048 vocab32000 f32, %d threads" % threads,
                  (("prefill (512) tok/s", "prefill_tok_s", "prefill_tok_s", None),
                   ("decode (128) tok/s", "decode_tok_s", "decode_tok_s", None)), llama_l, llama_t)
    res["llama"] = {"model": {"n_layers": 12, "dim": 768, "n_heads": 12, "hidden_dim": 2048, "vocab": 32000,
                              "dtype": "f32", "prompt": 512, "new_tokens": 128},
                    "lumen": llama_l, "pytorch": llama_t, "ratio_lumen_over_pytorch": ratio}
if gpt2_l:
    # BF16 rows compare lumen's BF16 weights against PyTorch in f32 (the reference figure);
    # PyTorch's own BF16 decode is printed for information.
    rows = (("prefill 1x512 (last logits) tok/s", "prefill_512_tok_s", "prefill_512_tok_s", 1.8),
            ("prefill 8x128 (all logits) tok/s", "prefill_8x128_tok_s", "prefill_8x128_tok_s", 1.8),
            ("decode 128 after 16 tok/s", "decode_tok_s", "decode_tok_s", 1.2),
            ("activations 8x128, 1 hook tok/s", "activations_tok_s", "activations_tok_s", None),
            ("decode, lumen BF16 vs torch f32", "decode_bf16_tok_s", "decode_tok_s", 1.8),
            ("prefill 1x512, lumen BF16 vs f32", "prefill_512_bf16_tok_s", "prefill_512_tok_s", None))
    ratio = table("GPT-2 small 12L d768 12H ffn3072 vocab50257 tied, f32, %d threads" % threads,
                  rows, gpt2_l, gpt2_t)
    if "decode_bf16_tok_s" in gpt2_t:
        print("%-34s %10s %10.1f" % ("(torch BF16 decode tok/s)", "", gpt2_t["decode_bf16_tok_s"]))
    res["gpt2"] = {"model": {"n_layers": 12, "dim": 768, "n_heads": 12, "hidden_dim": 3072, "vocab": 50257,
                             "ctx": 1024, "tied_head": True, "dtype": "f32", "prefill": [[1, 512], [8, 128]],
                             "decode": {"prompt": 16, "new_tokens": 128},
                             "activations": {"hook": "blocks.6.hook_resid_post", "batch": [8, 128], "calls": 4}},
                   "lumen": gpt2_l, "pytorch": gpt2_t, "ratio_lumen_over_pytorch": ratio,
                   "ratio_note": "decode_bf16_tok_s and prefill_512_bf16_tok_s are over PyTorch's f32 figures"}
sae_l = {j["arch"]: j for j in lines("sae", "lumen")}
sae_t = {j["arch"]: j for j in lines("sae", "torch")}
if sae_l:
    print()
    print("SAE training step (forward + backward + clip + Adam), d_in 768, d_sae 24576, batch 4096, "
          "%d threads" % threads)
    print("%-34s %10s %10s %9s  %s" % ("activations/s", "lumen", "pytorch", "ratio", "aim"))
    ratio = {}
    for arch, label, aim in (("relu", "ReLU + L1", 1.6), ("topk", "TopK k=32 + AuxK", 2.0)):
        if arch not in sae_l or arch not in sae_t:
            continue
        r = sae_l[arch]["acts_per_s"] / sae_t[arch]["acts_per_s"]
        ratio[arch] = round(r, 3)
        print("%-34s %10.1f %10.1f %8.3fx  >= %.1fx %s" % (label, sae_l[arch]["acts_per_s"],
              sae_t[arch]["acts_per_s"], r, aim, "met" if r >= aim else "MISSED"))
    for arch in sae_l:
        j = sae_l[arch]
        print("  lumen %s: %.1f GFLOP/s of dense products, %.0f%% of a bare sgemm's %.1f GFLOP/s" %
              (arch, j["gflops"], 100 * j["share_of_peak"], j["sgemm_peak_gflops"]))
    res["sae"] = {"shape": {"d_in": 768, "d_sae": 24576, "batch": 4096, "k": 32, "dead_every": 8},
                  "lumen": sae_l, "pytorch": sae_t, "ratio_lumen_over_pytorch": ratio}
lin_l, lin_t = one("linearity", "lumen"), one("linearity", "torch")
if lin_l:
    print()
    print("Linearity profile, GPT-2 small (random), %d tokens in windows of %d, %d threads" %
          (lin_l["tokens"], lin_l["ctx"], threads))
    print("%-34s %10s %10s %9s" % ("seconds", "lumen", "pytorch", "speed-up"))
    speedup = {}
    for key, label in (("total_s", "total"), ("forward_s", "forward (13 states)"),
                       ("analysis_s", "scores (lin, no-res, aniso, ID)")):
        if key in lin_t:
            speedup[key] = round(lin_t[key] / lin_l[key], 3)
            print("%-34s %10.2f %10.2f %8.3fx" % (label, lin_l[key], lin_t[key], speedup[key]))
    res["linearity"] = {"model": {"n_layers": 12, "dim": 768, "n_heads": 12, "hidden_dim": 3072, "vocab": 50257,
                                  "tokens": lin_l["tokens"], "ctx": lin_l["ctx"], "id_tokens": lin_l["id_tokens"]},
                        "lumen": lin_l, "pytorch": lin_t, "speedup_pytorch_time_over_lumen": speedup}
tmp = "%s.tmp.%d" % (out, os.getpid())
with open(tmp, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
print("\nwrote %s" % out)
PY
