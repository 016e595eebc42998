#!/usr/bin/env python3
"""bench_linearity.py - the PyTorch side of lumen's linearity benchmark (bench_linearity.c): the
linearity profile of GPT-2 small with random weights, as a user of llm-microscope computes it.

  model     transformers' GPT2Model (12 layers, d 768, 12 heads, MLP 3072, vocab 50257,
            context 1024) with its own random initialisation (N(0, 0.02^2)), float32, eval
            mode, torch.inference_mode(), SDPA attention
  forward   16384 random token ids in 16 windows of 1024 tokens, 4 windows per call, with
            output_hidden_states=True; h_0 .. h_11 are hidden_states[0..11] and h_12 is the
            last block's output before the final LayerNorm (a forward hook), as lumen takes it;
            each state is concatenated to [16384, 768]
  scores    llm-microscope 0.0.7's own functions, per block l (X = h_l, Y = h_{l+1}):
              procrustes_similarity(X, Y)            (linearity)
              procrustes_similarity_centered(X, Y)   (linearity without the residual, of Y - X;
                                                      0.0.7 computes the score but ends on
                                                      `sim = float` and returns None)
            and per state i = 0..12: calculate_anisotropy_torch(h_i) (all rows) and
            intrinsic_dimension(h_i[:1024], "cpu") (the first 1024 rows, as lumen's
            --id-tokens 1024). The tensors are float32, so its SVDs run in float32 (lumen works
            in double).

llm-microscope 0.0.7's __init__ imports `logit_lens` as a top-level module, which fails; the
package directory is put on sys.path so that import resolves, then its functions are used as
they are. One warm-up profile of 1024 tokens, then the best of --reps (default 1).

Prints one JSON line: {"impl": "pytorch", "total_s": ..., "forward_s": ..., "analysis_s": ...,
"linearity_s": ..., "anisotropy_s": ..., "intrinsic_dim_s": ..., ...}.

Usage: python bench/bench_linearity.py [--threads T] [--tokens N] [--ctx N] [--batch N]
       [--id-tokens N] [--reps N]
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time

import torch


def import_microscope():
    spec = importlib.util.find_spec("llm_microscope")
    if spec is None:
        sys.exit("bench_linearity.py: llm-microscope is not installed (pip install llm-microscope==0.0.7)")
    sys.path.insert(0, os.path.dirname(spec.origin))  # its __init__ does `from logit_lens import *`
    import llm_microscope

    return llm_microscope


def profile(model, ids, args, lm):
    n_layers = model.config.n_layer
    last = []

    def hook(_mod, _inp, out):
        last.append(out[0] if isinstance(out, tuple) else out)

    h = model.h[-1].register_forward_hook(hook)
    states = [[] for _ in range(n_layers + 1)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        windows = ids.view(-1, args.ctx)
        for w in range(0, windows.shape[0], args.batch):
            out = model(input_ids=windows[w:w + args.batch], output_hidden_states=True)
            for i in range(n_layers):
                states[i].append(out.hidden_states[i].reshape(-1, model.config.n_embd))
            states[n_layers].append(last.pop().reshape(-1, model.config.n_embd))
        H = [torch.cat(s) for s in states]
    t_fwd = time.perf_counter() - t0
    h.remove()

    t1 = time.perf_counter()
    lin, nores = [], []
    for i in range(n_layers):
        lin.append(lm.procrustes_similarity(H[i], H[i + 1]))
        nores.append(lm.procrustes_similarity_centered(H[i], H[i + 1]))
    t2 = time.perf_counter()
    aniso = [lm.calculate_anisotropy_torch(x) for x in H]
    t3 = time.perf_counter()
    idim = [lm.intrinsic_dimension(x[: args.id_tokens], "cpu") for x in H]
    t4 = time.perf_counter()
    return {
        "total_s": t4 - t0, "forward_s": t_fwd, "analysis_s": t4 - t1, "linearity_s": t2 - t1,
        "anisotropy_s": t3 - t2, "intrinsic_dim_s": t4 - t3,
        "mean_linearity": sum(lin) / len(lin),
        "no_residual_returns": type(nores[0]).__name__,
        "mean_anisotropy": sum(aniso) / len(aniso), "mean_intrinsic_dim": sum(idim) / len(idim),
    }


def main():
    ap = argparse.ArgumentParser(description="PyTorch + llm-microscope linearity-profile benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--id-tokens", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    assert args.tokens % args.ctx == 0, "--tokens must be a multiple of --ctx"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    lm = import_microscope()
    import transformers

    cfg = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, n_inner=3072, vocab_size=50257,
                                  n_positions=1024, attn_implementation="sdpa")
    model = transformers.GPT2Model(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (args.tokens,))

    profile(model, ids[: args.ctx], argparse.Namespace(**{**vars(args), "batch": 1}), lm)  # warm-up
    best = None
    for _ in range(args.reps):
        r = profile(model, ids, args, lm)
        if best is None or r["total_s"] < best["total_s"]:
            best = r
    assert math.isfinite(best["mean_linearity"])
    out = {"impl": "pytorch"}
    out.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in best.items()})
    out.update({
        "tokens": args.tokens, "forward_tok_s": round(args.tokens / best["forward_s"], 1), "ctx": args.ctx,
        "batch": args.batch, "id_tokens": args.id_tokens, "reps": args.reps, "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
    })
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
