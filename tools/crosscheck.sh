#!/bin/sh
# crosscheck.sh - `make crosscheck`: regenerate the reference fixtures with PyTorch /
# transformers and compare them with the committed ones, then run lumen's C tests.
# Covers tools/make_fixtures.py (GGUF logits), tools/make_quant_fixture.py and
# tools/make_hf_fixtures.py (tests/fixtures/hf: checkpoints byte for byte,
# expectations within 1e-5 of the largest committed value of each tensor) and
# tools/make_grad_fixtures.py (tests/fixtures/grad: loss, logits and every parameter's
# gradient for the committed hf checkpoints, within 1e-5 of each tensor's largest value).
#
# Creates a virtual environment at .venv in the repository root (gitignored) and
# installs tools/requirements.txt into it. Installing torch from PyPI is large (it
# brings CUDA wheels, several GB); lumen itself never needs Python.
#
# Environment: PYTHON (interpreter used to create .venv, default python3),
# ASSETS (shared assets directory, default ../shared/assets).
set -e

cd "$(dirname "$0")/.."
ASSETS=${ASSETS:-../shared/assets}
if [ ! -d "$ASSETS/models" ]; then
    echo "crosscheck: assets not found at $ASSETS (set ASSETS=DIR)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
echo "== installing tools/requirements.txt into .venv (torch is a large download the first time)"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r tools/requirements.txt

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lumen-crosscheck.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

echo "== regenerating fixtures into $TMP"
.venv/bin/python tools/make_fixtures.py --assets "$ASSETS" --out "$TMP"

echo "== comparing with tests/fixtures"
.venv/bin/python - "$TMP" tests/fixtures <<'PY'
import json, os, sys
import numpy as np

new_dir, old_dir = sys.argv[1], sys.argv[2]
names = sorted(f[:-5] for f in os.listdir(new_dir) if f.endswith(".json"))
if not names:
    sys.exit("crosscheck: no fixtures were generated")
bad = 0
for n in names:
    with open(os.path.join(new_dir, n + ".json")) as f:
        new_meta = json.load(f)
    try:
        with open(os.path.join(old_dir, n + ".json")) as f:
            old_meta = json.load(f)
    except OSError:
        print("%s: not committed in %s" % (n, old_dir))
        bad += 1
        continue
    if new_meta["tokens"] != old_meta["tokens"] or new_meta["shape"] != old_meta["shape"]:
        print("%s: tokens or shape differ from the committed fixture" % n)
        bad += 1
        continue
    shape = tuple(old_meta["shape"])
    a = np.fromfile(os.path.join(new_dir, n + ".f32"), dtype="<f4").astype(np.float64)
    b = np.fromfile(os.path.join(old_dir, n + ".f32"), dtype="<f4").astype(np.float64)
    if a.size != np.prod(shape) or b.size != np.prod(shape):
        print("%s: size mismatch (%d, %d, expected %d)" % (n, a.size, b.size, np.prod(shape)))
        bad += 1
        continue
    # Relative to the largest committed logit: element-wise relative error means
    # nothing for logits near zero.
    rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
    ok = rel < 1e-5
    print("%s: %s max rel err %.2e (%s)" % (n, "x".join(map(str, shape)), rel, "ok" if ok else "FAIL"))
    bad += not ok
if bad:
    sys.exit("crosscheck: %d fixture(s) differ" % bad)
PY

echo "== regenerating the quantisation fixture (gguf's dequantisers) and comparing"
.venv/bin/python tools/make_quant_fixture.py --out "$TMP/quant_blocks.json"
cmp "$TMP/quant_blocks.json" tests/fixtures/quant_blocks.json && echo "quant_blocks: identical"

echo "== regenerating the Hugging Face fixtures (tools/make_hf_fixtures.py) and comparing"
.venv/bin/python tools/make_hf_fixtures.py --assets "$ASSETS" --out "$TMP/hf"
.venv/bin/python - "$TMP/hf" tests/fixtures/hf <<'PY'
import filecmp, os, sys
import numpy as np
from safetensors.numpy import load_file

new_dir, old_dir = sys.argv[1], sys.argv[2]
bad = 0
# Checkpoints: weights come from numpy's PCG64 generator, so every file
# (config.json, *.safetensors, index) must be byte-identical.
ckpts = sorted(d for d in os.listdir(new_dir) if os.path.isdir(os.path.join(new_dir, d)))
for d in ckpts:
    for f in sorted(os.listdir(os.path.join(new_dir, d))):
        a, b = os.path.join(new_dir, d, f), os.path.join(old_dir, d, f)
        same = os.path.isfile(b) and filecmp.cmp(a, b, shallow=False)
        print("%s/%s: %s" % (d, f, "identical" if same else "FAIL (differs or not committed)"))
        bad += not same
# Expectations: computed in float32 by torch, which may round differently on
# another machine; compare each tensor relative to its largest committed value.
exps = sorted(f for f in os.listdir(new_dir) if f.endswith(".expect.safetensors"))
if not exps or not ckpts:
    sys.exit("crosscheck: no Hugging Face fixtures were generated")
for f in exps:
    try:
        old = load_file(os.path.join(old_dir, f))
    except Exception as e:
        print("%s: cannot read the committed file (%s)" % (f, e))
        bad += 1
        continue
    new = load_file(os.path.join(new_dir, f))
    if sorted(new) != sorted(old):
        print("%s: tensor names differ: %s" % (f, sorted(set(new) ^ set(old))))
        bad += 1
        continue
    worst, worst_name, fails = 0.0, "", 0
    for k in sorted(new):
        a, b = new[k], old[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            print("%s: %s is %s %s, committed %s %s" % (f, k, a.dtype, a.shape, b.dtype, b.shape))
            fails += 1
            continue
        if a.dtype.kind in "iu":
            if not np.array_equal(a, b):
                print("%s: %s differs" % (f, k))
                fails += 1
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
        if rel >= 1e-5:
            print("%s: %s max rel err %.2e (FAIL)" % (f, k, rel))
            fails += 1
        if rel >= worst:
            worst, worst_name = rel, k
    print("%s: %d tensors, worst max rel err %.2e (%s) (%s)" % (f, len(new), worst, worst_name, "ok" if not fails else "FAIL"))
    bad += fails > 0
if bad:
    sys.exit("crosscheck: %d Hugging Face fixture file(s) differ" % bad)
PY

echo "== regenerating the gradient fixtures (tools/make_grad_fixtures.py) and comparing"
.venv/bin/python tools/make_grad_fixtures.py --hf tests/fixtures/hf --out "$TMP/grad"
.venv/bin/python - "$TMP/grad" tests/fixtures/grad <<'PY'
import os, sys
import numpy as np
from safetensors.numpy import load_file

new_dir, old_dir = sys.argv[1], sys.argv[2]
files = sorted(f for f in os.listdir(new_dir) if f.endswith(".grad.safetensors"))
if not files:
    sys.exit("crosscheck: no gradient fixtures were generated")
bad = 0
for f in files:
    try:
        old = load_file(os.path.join(old_dir, f))
    except Exception as e:
        print("%s: cannot read the committed file (%s)" % (f, e))
        bad += 1
        continue
    new = load_file(os.path.join(new_dir, f))
    if sorted(new) != sorted(old):
        print("%s: tensor names differ: %s" % (f, sorted(set(new) ^ set(old))))
        bad += 1
        continue
    worst, worst_name, fails = 0.0, "", 0
    for k in sorted(new):
        a, b = new[k], old[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            print("%s: %s is %s %s, committed %s %s" % (f, k, a.dtype, a.shape, b.dtype, b.shape))
            fails += 1
            continue
        if a.dtype.kind in "iu":
            if not np.array_equal(a, b):
                print("%s: %s differs" % (f, k))
                fails += 1
            continue
        # Relative to the tensor's largest committed value: some gradient entries are
        # zero up to rounding (e.g. GPT-2's key bias).
        a, b = a.astype(np.float64), b.astype(np.float64)
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
        if rel >= 1e-5:
            print("%s: %s max rel err %.2e (FAIL)" % (f, k, rel))
            fails += 1
        if rel >= worst:
            worst, worst_name = rel, k
    print("%s: %d tensors, worst max rel err %.2e (%s) (%s)" % (f, len(new), worst, worst_name, "ok" if not fails else "FAIL"))
    bad += fails > 0
if bad:
    sys.exit("crosscheck: %d gradient fixture file(s) differ" % bad)
PY

echo "== a model saved by lumen, loaded by transformers (tools/make_saved_fixture.py)"
make build >/dev/null
.venv/bin/python tools/make_saved_fixture.py --lumen build/lumen --assets "$ASSETS" --out "$TMP/saved"
.venv/bin/python - "$TMP/saved/stories260k_converted.expect.safetensors" tests/fixtures/hf/stories260k_converted.expect.safetensors <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert (a["input_ids"] == b["input_ids"]).all(), "input ids differ"
rel = float(np.max(np.abs(a["logits"] - b["logits"])) / np.max(np.abs(b["logits"])))
print("stories260k_converted: max rel err %.2e (%s)" % (rel, "ok" if rel < 1e-5 else "FAIL"))
sys.exit(0 if rel < 1e-5 else 1)
PY

echo "== the model lumen trained (models/lumen-tiny), loaded by transformers (tools/make_trained_fixture.py)"
.venv/bin/python tools/make_trained_fixture.py --out "$TMP/trained"
.venv/bin/python - "$TMP/trained/lumen_tiny.expect.safetensors" tests/fixtures/hf/lumen_tiny.expect.safetensors <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert (a["input_ids"] == b["input_ids"]).all(), "input ids differ"
rel = float(np.max(np.abs(a["logits"] - b["logits"])) / np.max(np.abs(b["logits"])))
print("lumen_tiny: max rel err %.2e (%s)" % (rel, "ok" if rel < 1e-5 else "FAIL"))
sys.exit(0 if rel < 1e-5 else 1)
PY

echo "== running the C test suite"
make test
