#!/usr/bin/env python3
"""make_linearity_fixture.py - small activation matrices and the scores that llm-microscope (the
toolkit of Razzhigaev et al. 2024, "Your Transformer is Secretly Linear") computes for them, for
tests/test_linearity.c.

    python tools/make_linearity_fixture.py [--out tests/fixtures/linearity]

Needs numpy, torch and llm-microscope==0.0.7 (pip). Writes <out>/<case>.safetensors:

  X                       F32 [n, d]  the states h_i (seeded numpy)
  Y                       F32 [n, d]  the states h_{i+1}
  linearity               F64 [1]     procrustes_similarity(X, Y)
  linearity_no_residual   F64 [1]     procrustes_similarity(X, Y - X)
  anisotropy              F64 [1]     calculate_anisotropy_torch(X)
  intrinsic_dim           F64 [1]     intrinsic_dimension(X)

except in the case "wide" (d > n), where llm-microscope's linearity scores are not a usable
reference: it inverts every singular value of the centred X, including the one that is zero up to
rounding (centring leaves rank n - 1), so its result is rounding noise amplified by 1e16
(0.99963 in float64 for this case, where the exact least-squares fit is perfect). There the two
linearity tensors hold numpy.linalg.lstsq's minimum-norm solution (singular values below
max(n, d) * eps dropped, lumen's rule) and llm-microscope's values are kept beside them as
linearity_microscope and linearity_no_residual_microscope, for the record.

The float32 matrices are widened to float64 before llm-microscope sees them, and torch's default
dtype is float64 while it runs, so every score is llm-microscope's formula in double precision:
that is what lumen computes. Two things of the package are worked around, not changed:

* llm_microscope/__init__.py imports `logit_lens` as a top-level module, which fails; the
  formulas live in llm_microscope/functions.py, which is loaded directly.
* procrustes_similarity_centered (the score without the residual) ends with `sim = float` and
  returns None; its first line is y = y0 - x, after which it is procrustes_similarity, so the
  fixture calls procrustes_similarity(X, Y - X) (the difference taken in float64).

With torch's default dtype left at float32, intrinsic_dimension computes its empirical CDF in
float32; the script prints how much that moves each dimension (about 1e-7 relative).

Checks before writing (the script stops on failure): each linearity score equals a numpy
least-squares computation of the same definition within 1e-9; anisotropy equals numpy's
eigenvalue ratio within 1e-12.
"""
import argparse
import importlib.metadata
import importlib.util
import os

import json
import struct

import numpy as np
import torch


def save_safetensors(path, tensors, metadata):
    """The safetensors layout written by hand, keys sorted, so the bytes depend only on the
    content (the safetensors package orders the metadata map at random)."""
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    os.replace(tmp, path)


def load_microscope():
    version = importlib.metadata.version("llm-microscope")
    if version != "0.0.7":
        raise SystemExit(f"llm-microscope {version} installed; these fixtures were made with 0.0.7")
    spec = importlib.util.find_spec("llm_microscope")
    path = os.path.join(spec.submodule_search_locations[0], "functions.py")
    mspec = importlib.util.spec_from_file_location("llm_microscope_functions", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


def cases():
    """name -> (X, Y, what), all float32."""
    out = {}
    rng = np.random.default_rng(20240520)

    # A smooth nonlinear map with a residual: mostly linear.
    n, d = 300, 16
    X = rng.normal(size=(n, d)) + rng.normal(size=d) * 3
    W = rng.normal(size=(d, d)) / np.sqrt(d)
    Y = X + 0.6 * np.tanh(X @ W) + 0.05 * rng.normal(size=(n, d))
    out["smooth"] = (X, Y, "n 300, d 16: Y = X + 0.6 tanh(X W) + noise")

    # Strongly nonlinear, and X with one massive, offset dimension (ill-conditioned X^T X, as LLM
    # residual streams have).
    X = rng.normal(size=(n, d))
    X[:, 3] = X[:, 3] * 300 + 1000
    W1 = rng.normal(size=(d, 4 * d))
    W2 = rng.normal(size=(4 * d, d)) / 8
    Xs = X.copy()
    Xs[:, 3] /= 300
    Y = np.maximum(Xs @ W1, 0) @ W2 + 0.01 * X
    out["massive"] = (X, Y, "n 300, d 16, column 3 scaled 300x and offset 1000: Y = relu(X' W1) W2 + 0.01 X")

    # Repeated rows (as BOS positions give): duplicates for the intrinsic dimension, ties in mu.
    X = rng.normal(size=(n, d))
    X[1:21] = X[0]           # 21 copies of one row: r1 = 0
    X[40] = X[41] = X[42] * 1.0  # three copies: r1 = 0 for each
    Y = np.sin(X) + 0.5 * X + 0.1 * rng.normal(size=(n, d))
    out["duplicates"] = (X, Y, "n 300, d 16, rows 0-20 equal, rows 40-42 equal: Y = sin X + X / 2 + noise")

    # More features than tokens: centred X has rank n - 1 and fits any centred Y.
    n2, d2 = 40, 64
    X = rng.normal(size=(n2, d2))
    Y = rng.normal(size=(n2, d2))
    out["wide"] = (X, Y, "n 40, d 64 (d > n): independent Gaussians")

    # Two nearly equal columns: X^T X has a condition number near 1e11, beyond what lumen solves
    # by Cholesky, so this takes the SVD path with d < n.
    X = rng.normal(size=(n, d))
    X[:, 5] = X[:, 2] + 3e-6 * rng.normal(size=n)
    Y = np.tanh(X @ rng.normal(size=(d, d))) + X[:, [5]] - X[:, [2]]
    out["collinear"] = (X, Y, "n 300, d 16, column 5 = column 2 + 3e-6 noise: Y = tanh(X W) + (x5 - x2)")

    # Points on a 2-D plane in 10-D: intrinsic dimension about 2.
    n3 = 400
    B = np.linalg.qr(rng.normal(size=(10, 2)))[0]
    P = rng.uniform(-1, 1, size=(n3, 2))
    X = P @ B.T + 0.5
    Y = np.tanh(X) @ rng.normal(size=(10, 10))
    out["plane"] = (X, Y, "n 400, d 10: uniform points of a 2-D square in a random plane")
    return {k: (x.astype(np.float32), y.astype(np.float32), w) for k, (x, y, w) in out.items()}


def numpy_linearity(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    X = X / np.linalg.norm(X)
    Y = Y / np.linalg.norm(Y)
    A = np.linalg.lstsq(X, Y, rcond=None)[0]
    return 1 - np.sum((X @ A - Y) ** 2)


def numpy_anisotropy(X):
    X = X - X.mean(0)
    ev = np.linalg.eigvalsh(X.T @ X)
    return ev[-1] / ev.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "linearity"))
    args = ap.parse_args()
    lm = load_microscope()
    os.makedirs(args.out, exist_ok=True)
    for name, (X, Y, what) in cases().items():
        x = torch.from_numpy(X.astype(np.float64))
        y = torch.from_numpy(Y.astype(np.float64))
        torch.set_default_dtype(torch.float32)
        id32 = lm.intrinsic_dimension(x, "cpu")
        torch.set_default_dtype(torch.float64)
        try:
            lin = lm.procrustes_similarity(x, y)
            nores = lm.procrustes_similarity(x, y - x)
            aniso = lm.calculate_anisotropy_torch(x)
            idim = lm.intrinsic_dimension(x, "cpu")
        finally:
            torch.set_default_dtype(torch.float32)
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        np_lin, np_nores = numpy_linearity(X64, Y64), numpy_linearity(X64, Y64 - X64)
        extra = {}
        if X.shape[1] >= X.shape[0]:
            extra = {"linearity_microscope": np.array([lin], dtype=np.float64),
                     "linearity_no_residual_microscope": np.array([nores], dtype=np.float64)}
            lin, nores = float(np_lin), float(np_nores)
        for got, want, tol, what_ in [
            (lin, np_lin, 1e-9, "linearity"),
            (nores, np_nores, 1e-9, "linearity_no_residual"),
            (aniso, numpy_anisotropy(X64), 1e-12, "anisotropy"),
        ]:
            if not abs(got - want) <= tol:
                raise SystemExit(f"{name}: {what_}: llm-microscope {got!r} vs numpy {want!r}")
        tensors = {
            **extra,
            "X": X,
            "Y": Y,
            "linearity": np.array([lin], dtype=np.float64),
            "linearity_no_residual": np.array([nores], dtype=np.float64),
            "anisotropy": np.array([aniso], dtype=np.float64),
            "intrinsic_dim": np.array([idim], dtype=np.float64),
        }
        meta = {"case": name, "what": what, "llm_microscope": "0.0.7", "torch": torch.__version__.split("+")[0],
                "numpy": np.__version__}
        save_safetensors(os.path.join(args.out, f"{name}.safetensors"), tensors, meta)
        if extra:
            print(f"{name:11s} llm-microscope's own linearity {extra['linearity_microscope'][0]:.9f}, "
                  f"no-residual {extra['linearity_no_residual_microscope'][0]:.9f} (rounding noise; see above)")
        print(f"{name:11s} n {X.shape[0]:3d} d {X.shape[1]:2d}  linearity {lin:.9f}  no-residual {nores:.9f}  "
              f"anisotropy {aniso:.9f}  intrinsic dim {idim:.9f}  (float32 CDF: {id32 - idim:+.2e})")


if __name__ == "__main__":
    main()
