#!/usr/bin/env python3
"""bench_train.py - the PyTorch side of lumen's training benchmark: tokens/s of one full
training step (forward, cross-entropy loss over every position, backward, AdamW update).

Two models, written out in plain PyTorch with random weights (N(0, 0.02^2) matrices and
embeddings, zero biases, unit norm weights), float32:

  gpt2-124m    GPT-2 small: 12 layers, d 768, 12 heads (head_dim 64), GELU-tanh MLP 3072,
               LayerNorm (eps 1e-5) with biases, learned positions (context 1024), vocab
               50257, output head tied to the token embeddings; batch 4 x 256 tokens
  llama-small  Llama shape from the flags (default d 256, 4 layers, 8 heads / 4 KV heads,
               SwiGLU ffn 704, vocab 4096, untied head unless --tied); RMSNorm (eps 1e-5),
               rotate-half RoPE (theta 10000), no biases; batch 16 x 128 tokens

Attention is F.scaled_dot_product_attention(is_causal=True) (GQA by repeating KV heads).
Optimiser: torch.optim.AdamW(lr 1e-4, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1,
foreach=True, fused=False) over every parameter. Inputs and targets are random tokens
(targets = inputs shifted by one). --warmup steps (default 2) are run first, then
--steps (default 5) are timed one by one; step_s is their mean, tokens_per_s = batch x
seq / step_s. torch.set_num_threads(--threads) (default 2); set OMP_NUM_THREADS and
MKL_NUM_THREADS to the same for a fair comparison.

Prints one JSON line per model:
{"impl": "pytorch", "model": "gpt2-124m", "tokens_per_s": ..., "step_s": ..., "threads": T,
 "torch": "...", ...}

Usage: python bench/bench_train.py [--model gpt2|llama|all] [--threads T]
       [--dim D --layers L --heads H --kv-heads K --ffn F --vocab V --batch B --seq S --tied]
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def init_weights(model, std=0.02):
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            nn.init.normal_(p, 0.0, std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)


def attention(q, k, v):
    """q [B, H, T, hd], k/v [B, Hkv, T, hd]; causal."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class GPT2Block(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, ffn)
        self.mlp_proj = nn.Linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=-1)
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        a = attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, t, d)
        x = x + self.c_proj(a)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, d=768, layers=12, heads=12, ffn=3072, vocab=50257, ctx=1024):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(GPT2Block(d, heads, ffn) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(t, device=ids.device))[None]
        for blk in self.h:
            x = blk(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied head


def rope_tables(t, hd, theta=10000.0):
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return torch.cos(ang).float(), torch.sin(ang).float()  # [T, hd]


def rope(x, cos, sin):
    """Rotate-half RoPE (pairs i, i + hd/2), as in Hugging Face Llama. x [B, H, T, hd]."""
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
    return x * cos + rot * sin


class LlamaBlock(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.attn_norm = nn.RMSNorm(d, eps=1e-5)
        self.q = nn.Linear(d, heads * self.hd, bias=False)
        self.k = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.v = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.o = nn.Linear(heads * self.hd, d, bias=False)
        self.ffn_norm = nn.RMSNorm(d, eps=1e-5)
        self.gate = nn.Linear(d, ffn, bias=False)
        self.up = nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        h = self.attn_norm(x)
        split = lambda y, n: y.view(b, t, n, self.hd).transpose(1, 2)
        q = rope(split(self.q(h), self.heads), cos, sin)
        k = rope(split(self.k(h), self.kv_heads), cos, sin)
        v = split(self.v(h), self.kv_heads)
        x = x + self.o(attention(q, k, v).transpose(1, 2).reshape(b, t, -1))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, d, layers, heads, kv_heads, ffn, vocab, tied):
        super().__init__()
        self.hd = d // heads
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(LlamaBlock(d, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.head = None if tied else nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        cos, sin = rope_tables(ids.shape[1], self.hd)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        return F.linear(x, self.embed.weight if self.head is None else self.head.weight)


def bench(name, model, vocab, batch, seq, args, extra):
    init_weights(model)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=True, fused=False
    )
    g = torch.Generator().manual_seed(args.seed)
    data = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    inputs, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def step():
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        loss = step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    out = {
        "impl": "pytorch",
        "model": name,
        "tokens_per_s": round(batch * seq / mean, 1),
        "step_s": round(mean, 4),
        "step_s_min": round(min(times), 4),
        "threads": args.threads,
        "torch": torch.__version__,
        "batch": batch,
        "seq": seq,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "last_loss": round(loss, 4),
    }
    out.update(extra)
    print(json.dumps(out), flush=True)
    assert math.isfinite(loss)


def main():
    ap = argparse.ArgumentParser(description="PyTorch training-step benchmark")
    ap.add_argument("--model", choices=["gpt2", "llama", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--gpt2-batch", type=int, default=4)
    ap.add_argument("--gpt2-seq", type=int, default=256)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=704)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--tied", action="store_true", help="tie the llama output head to the embeddings")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.model in ("gpt2", "all"):
        bench("gpt2-124m", GPT2(), 50257, args.gpt2_batch, args.gpt2_seq, args, {})
    if args.model in ("llama", "all"):
        check = args.dim % args.heads == 0 and args.heads % args.kv_heads == 0
        assert check, "--dim must divide by --heads and --heads by --kv-heads"
        model = Llama(args.dim, args.layers, args.heads, args.kv_heads, args.ffn, args.vocab, args.tied)
        shape = {
            "dim": args.dim, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
            "ffn": args.ffn, "vocab": args.vocab, "tied": args.tied,
        }
        bench("llama-small", model, args.vocab, args.batch, args.seq, args, shape)


if __name__ == "__main__":
    main()
