#!/usr/bin/env python3
"""Writes tests/fixtures/quant_blocks.json: random quantised rows (Q4_0, Q4_K, Q8_0) and their
values as dequantised by the `gguf` package (llama.cpp's own Python reference), so lumen's
dequantisers are checked against an independent implementation.

Usage: python tools/make_quant_fixture.py [--out tests/fixtures/quant_blocks.json]
"""
import argparse
import json
import os

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "quant_blocks.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(20261127)
    out = {}
    for t in (T.Q4_0, T.Q8_0, T.Q4_K):
        block, nbytes = GGML_QUANT_SIZES[t]
        nblocks = 3
        raw = rng.integers(0, 256, size=(nblocks, nbytes), dtype=np.uint8)
        # the f16 scales (d, and dmin for Q4_K) are set to finite, moderate values
        nscales = 2 if t == T.Q4_K else 1
        for b in range(nblocks):
            for s in range(nscales):
                v = np.array([rng.uniform(-0.1, 0.1)], dtype=np.float16).view(np.uint8)
                raw[b, 2 * s: 2 * s + 2] = v
        vals = quants.dequantize(raw.reshape(1, -1), t).reshape(-1)
        assert vals.size == nblocks * block and np.isfinite(vals).all()
        out[t.name] = {"raw_hex": raw.tobytes().hex(), "n": int(vals.size),
                       "values": [float(x) for x in vals.astype(np.float32)]}
    with open(args.out + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(args.out + ".tmp", args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
