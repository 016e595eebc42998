#!/usr/bin/env python3
"""bench_sae.py - the PyTorch side of lumen's SAE training benchmark (bench_sae.c): activations/s
of one training step (forward, loss, backward, gradient clipping to global norm 1, Adam in fp32).

The same SAEs, step and data as bench_sae.c, written in plain PyTorch (float32):

  x       a batch of 4096 activations of width 768, N(0, 1) entries (E||x||^2 = d_in)
  SAE     W_enc [768, 24576], b_enc, W_dec [24576, 768] (rows of norm 0.1, W_enc = W_dec^T),
          b_dec; pre = (x - b_dec) @ W_enc + b_enc
  relu    f = relu(pre); x_hat = f @ W_dec + b_dec;
          loss = mean_t ||x_t - x_hat_t||^2 + 5 * mean_t f_t . ||W_dec,i||   (lr 5e-5)
  topk    k = 32: vals, idx = pre.topk(32); f = relu(vals); x_hat = F.embedding_bag(idx, W_dec,
          per_sample_weights=f, mode="sum") + b_dec (a sparse decoder: only 32 rows read per
          activation, and a scattered gradient); AuxK as lumen computes it: every 8th latent
          marked dead (3072), z = the raw pre-activations of the top 384 (= d_in / 2) dead
          latents of each row (topk over the dead columns only), e = x - x_hat detached,
          aux = (1/32) * mean_t ||e_t - z_t @ W_dec||^2 through another embedding_bag  (lr 2e-4)
  step    loss.backward(); clip_grad_norm_(1.0, foreach); torch.optim.Adam (betas 0.9, 0.999,
          eps 1e-8, fused=True: PyTorch's fastest CPU Adam); the fired counts of each latent
          (used by a trainer for dead-latent tracking) are accumulated, as lumen's step does

One warm-up step, then the best of --reps steps; acts_per_s = batch / step time.
torch.set_num_threads(--threads); run.sh sets OMP_NUM_THREADS and MKL_NUM_THREADS to match.

Prints one JSON line per SAE: {"impl": "pytorch", "arch": "relu", "acts_per_s": ..., ...}.

Usage: python bench/bench_sae.py [--arch relu|topk|all] [--threads T] [--reps N] [--batch N] [--d-sae N]
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

D_IN, K = 768, 32


class SAE(torch.nn.Module):
    def __init__(self, d_in, d_sae, gen):
        super().__init__()
        w = torch.randn(d_sae, d_in, generator=gen)
        w = w * (0.1 / w.norm(dim=1, keepdim=True))
        self.W_dec = torch.nn.Parameter(w.contiguous())
        self.W_enc = torch.nn.Parameter(w.t().contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))

    def pre(self, x):
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc)


def relu_step(sae, x, fired):
    f = torch.relu(sae.pre(x))
    x_hat = torch.addmm(sae.b_dec, f, sae.W_dec)
    mse = (x_hat - x).square().sum(-1).mean()
    sparsity = (f @ sae.W_dec.norm(dim=1)).mean()
    loss = mse + 5.0 * sparsity
    loss.backward()
    with torch.no_grad():
        fired += (f > 0).sum(0)
    return loss


def topk_step(sae, x, fired, dead_idx, k_aux, aux_scale):
    pre = sae.pre(x)
    vals, idx = pre.topk(K, dim=-1, sorted=False)
    f = torch.relu(vals)
    x_hat = F.embedding_bag(idx, sae.W_dec, per_sample_weights=f, mode="sum") + sae.b_dec
    diff = x - x_hat
    mse = diff.square().sum(-1).mean()
    # AuxK: the top k_aux dead latents of each row, by raw pre-activation
    zv, zi = pre.index_select(1, dead_idx).topk(k_aux, dim=-1, sorted=False)
    e_hat = F.embedding_bag(dead_idx[zi], sae.W_dec, per_sample_weights=zv, mode="sum")
    aux = aux_scale * (e_hat - diff.detach()).square().sum(-1).mean()
    loss = mse + aux
    loss.backward()
    with torch.no_grad():
        fired += torch.bincount(idx[f > 0], minlength=fired.numel())
    return loss


def bench(arch, args):
    gen = torch.Generator().manual_seed(args.seed)
    sae = SAE(D_IN, args.d_sae, gen)
    x = torch.randn(args.batch, D_IN, generator=gen)
    params = list(sae.parameters())
    lr = 5e-5 if arch == "relu" else 2e-4
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    fired = torch.zeros(args.d_sae, dtype=torch.long)
    dead_idx = torch.arange(0, args.d_sae, 8)
    k_aux = min(D_IN // 2, dead_idx.numel())
    aux_scale = (1.0 / 32) * min(dead_idx.numel() / (D_IN // 2), 1.0)

    def step():
        opt.zero_grad(set_to_none=False)
        fired.zero_()
        if arch == "relu":
            loss = relu_step(sae, x, fired)
        else:
            loss = topk_step(sae, x, fired, dead_idx, k_aux, aux_scale)
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        return float(loss.detach()), float(gn)

    first, _ = step()  # warm-up
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        loss, gn = step()
        times.append(time.perf_counter() - t0)
    assert math.isfinite(loss) and math.isfinite(gn)
    best = min(times)
    out = {
        "impl": "pytorch",
        "arch": arch,
        "acts_per_s": round(args.batch / best, 1),
        "step_s": round(best, 4),
        "step_s_mean": round(sum(times) / len(times), 4),
        "first_loss": round(first, 4),
        "last_loss": round(loss, 4),
        "batch": args.batch,
        "d_in": D_IN,
        "d_sae": args.d_sae,
        "k": K if arch == "topk" else 0,
        "n_dead": int(dead_idx.numel()) if arch == "topk" else 0,
        "reps": args.reps,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description="PyTorch SAE training-step benchmark")
    ap.add_argument("--arch", choices=["relu", "topk", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for arch in ("relu", "topk"):
        if args.arch in (arch, "all"):
            bench(arch, args)


if __name__ == "__main__":
    main()
