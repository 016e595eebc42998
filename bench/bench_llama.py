#!/usr/bin/env python3
"""bench_llama.py - the PyTorch side of lumen's Llama benchmark (bench/bench_llama.c is the C side).

A Llama-architecture model of GPT-2-small size with random weights:
12 layers, d 768, 12 heads (n_kv_heads 12), head_dim 64, SwiGLU ffn 2048,
vocab 32000, untied output head, RMSNorm eps 1e-5, interleaved RoPE (theta
10000), float32. Weights ~ N(0, 0.02^2), norm weights 1.

  prefill: one forward over 512 tokens; logits of the last position only
           (the final hidden state is sliced before the head).
  decode:  continuing after the prefill, 128 greedy single-token steps with a
           preallocated KV cache (keys and values are never recomputed).

One warm-up run, then the best of --reps runs for each phase. Prints one JSON line:
{"impl": "pytorch", "prefill_tok_s": ..., "decode_tok_s": ..., "threads": ..., "torch": ...}
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

DIM, N_LAYERS, N_HEADS, HIDDEN, VOCAB = 768, 12, 12, 2048, 32000
HEAD_DIM = DIM // N_HEADS
EPS, THETA = 1e-5, 10000.0
PROMPT, NEW = 512, 128
MAX_CTX = 640


class Llama:
    def __init__(self, seed, std=0.02):
        g = torch.Generator().manual_seed(seed)

        def w(rows, cols):
            return torch.randn(rows, cols, generator=g) * std

        self.tok = w(VOCAB, DIM)
        self.layers = []
        for _ in range(N_LAYERS):
            self.layers.append(
                dict(
                    attn_norm=torch.ones(DIM),
                    ffn_norm=torch.ones(DIM),
                    # q, k, v fused into one [3*DIM, DIM] matrix: one GEMM instead of three.
                    wqkv=torch.cat([w(DIM, DIM), w(DIM, DIM), w(DIM, DIM)]),
                    wo=w(DIM, DIM),
                    # gate and up fused likewise.
                    w13=torch.cat([w(HIDDEN, DIM), w(HIDDEN, DIM)]),
                    w2=w(DIM, HIDDEN),
                )
            )
        self.final_norm = torch.ones(DIM)
        self.out = w(VOCAB, DIM)
        inv = THETA ** (-torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM)
        ang = torch.arange(MAX_CTX, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos = torch.cos(ang).float()  # [MAX_CTX, HEAD_DIM/2]
        self.sin = torch.sin(ang).float()
        self.kc = torch.zeros(N_LAYERS, N_HEADS, MAX_CTX, HEAD_DIM)
        self.vc = torch.zeros(N_LAYERS, N_HEADS, MAX_CTX, HEAD_DIM)

    def rope(self, x, pos):
        # x [T, H, hd]; rotates pairs (2i, 2i+1) like llama2.c / GGUF llama.
        T = x.shape[0]
        cos = self.cos[pos : pos + T, None, :]
        sin = self.sin[pos : pos + T, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)

    def forward(self, tokens, pos):
        """tokens: LongTensor [T] at positions pos..pos+T-1; returns logits of the last [VOCAB]."""
        T = tokens.shape[0]
        x = F.embedding(tokens, self.tok)  # [T, DIM]
        for li, L in enumerate(self.layers):
            h = F.rms_norm(x, (DIM,), L["attn_norm"], EPS)
            q, k, v = F.linear(h, L["wqkv"]).split(DIM, dim=-1)
            q = self.rope(q.view(T, N_HEADS, HEAD_DIM), pos).transpose(0, 1)  # [H, T, hd]
            k = self.rope(k.view(T, N_HEADS, HEAD_DIM), pos).transpose(0, 1)
            v = v.view(T, N_HEADS, HEAD_DIM).transpose(0, 1)
            self.kc[li, :, pos : pos + T] = k
            self.vc[li, :, pos : pos + T] = v
            keys = self.kc[li, :, : pos + T]
            vals = self.vc[li, :, : pos + T]
            # Causal within the new block; a single new token sees the whole cache.
            if T > 1:
                assert pos == 0, "multi-token calls start an empty cache in this benchmark"
                att = F.scaled_dot_product_attention(q, keys, vals, is_causal=True)
            else:
                att = F.scaled_dot_product_attention(q, keys, vals)
            x = x + F.linear(att.transpose(0, 1).reshape(T, DIM), L["wo"])
            h = F.rms_norm(x, (DIM,), L["ffn_norm"], EPS)
            gate, up = F.linear(h, L["w13"]).split(HIDDEN, dim=-1)
            x = x + F.linear(F.silu(gate) * up, L["w2"])
        x = F.rms_norm(x[-1], (DIM,), self.final_norm, EPS)  # last position only
        return F.linear(x, self.out)


def run_once(model, prompt):
    t0 = time.perf_counter()
    logits = model.forward(prompt, 0)
    t1 = time.perf_counter()
    tok = int(torch.argmax(logits))
    pos = prompt.shape[0]
    t2 = time.perf_counter()
    for _ in range(NEW):
        logits = model.forward(torch.tensor([tok]), pos)
        tok = int(torch.argmax(logits))
        pos += 1
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2, tok


def main():
    ap = argparse.ArgumentParser(description="PyTorch Llama prefill/decode benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        model = Llama(args.seed)
        g = torch.Generator().manual_seed(args.seed + 1)
        prompt = torch.randint(0, VOCAB, (PROMPT,), generator=g)
        run_once(model, prompt)  # warm-up
        best_p = best_d = float("inf")
        for _ in range(args.reps):
            tp, td, _ = run_once(model, prompt)
            best_p, best_d = min(best_p, tp), min(best_d, td)
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "prefill_tok_s": round(PROMPT / best_p, 2),
                "decode_tok_s": round(NEW / best_d, 2),
                "threads": args.threads,
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
