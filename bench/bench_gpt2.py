#!/usr/bin/env python3
"""bench_gpt2.py - the PyTorch side of lumen's GPT-2 benchmark (bench/bench_gpt2.c is the C side).

GPT-2 small (124M) with random weights, written out in plain PyTorch: 12 layers, d 768,
12 heads (head_dim 64), GELU-tanh MLP 3072, LayerNorm (eps 1e-5), learned positions (1024),
biases, vocab 50257, output head tied to the token embeddings, float32. Weights ~ N(0, 0.02^2),
biases 0, LayerNorm weights 1.

  prefill_512:   one sequence of 512 tokens; logits of the last position only (the final
                 hidden state is sliced before the head).
  prefill_8x128: 8 sequences of 128 tokens in one call; logits of every position, into a
                 preallocated buffer.
  decode:        a 16-token prompt, then 128 greedy single-token steps (timed) with a
                 preallocated KV cache; single-row layers are matrix-vector products (addmv).
  activations:   batches of 8x128 tokens through the blocks (no final norm, no head), a forward
                 hook copying block 6's output (TransformerLens blocks.6.hook_resid_post) into a
                 buffer; tokens/s.
  decode_bf16:   (for information) decode with the weights and activations in bfloat16.

One warm-up run, then the best of --reps runs for each phase. Prints one JSON line:
{"impl": "pytorch", "prefill_512_tok_s": ..., ..., "threads": ..., "torch": ...}
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, N_LAYERS, N_HEADS, HIDDEN, VOCAB, CTX = 768, 12, 12, 3072, 50257, 1024
HEAD_DIM = DIM // N_HEADS
EPS = 1e-5
LONG, NSEQ, SEQ, PROMPT, NEW, ACT_CALLS = 512, 8, 128, 16, 128, 4
ACT_LAYER = 6


def linear(x, lin):
    """x [..., in] @ W^T + b; a single row goes through a matrix-vector product."""
    if x.dim() == 2 and x.shape[0] == 1:
        return torch.addmv(lin.bias, lin.weight, x[0]).unsqueeze(0)
    return F.linear(x, lin.weight, lin.bias)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(DIM, eps=EPS)
        self.c_attn = nn.Linear(DIM, 3 * DIM)  # q, k, v fused: one GEMM instead of three
        self.attn_proj = nn.Linear(DIM, DIM)
        self.ln_2 = nn.LayerNorm(DIM, eps=EPS)
        self.c_fc = nn.Linear(DIM, HIDDEN)
        self.mlp_proj = nn.Linear(HIDDEN, DIM)

    def forward(self, x, kc, vc, pos):
        """x [B, T, DIM] at positions pos..pos+T-1; kc, vc [B, H, CTX, hd] or None (no cache)."""
        B, T, _ = x.shape
        h = F.layer_norm(x, (DIM,), self.ln_1.weight, self.ln_1.bias, EPS)
        qkv = linear(h.view(B * T, DIM), self.c_attn).view(B, T, 3, N_HEADS, HEAD_DIM)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, hd]
        if kc is not None:
            kc[:, :, pos : pos + T] = k
            vc[:, :, pos : pos + T] = v
        if T > 1:
            assert pos == 0, "multi-token calls start an empty cache in this benchmark"
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # a single new token sees the whole cache
            att = F.scaled_dot_product_attention(q, kc[:, :, : pos + 1], vc[:, :, : pos + 1])
        x = x + linear(att.transpose(1, 2).reshape(B * T, DIM), self.attn_proj).view(B, T, DIM)
        h = F.layer_norm(x, (DIM,), self.ln_2.weight, self.ln_2.bias, EPS)
        h = F.gelu(linear(h.view(B * T, DIM), self.c_fc), approximate="tanh")
        return x + linear(h, self.mlp_proj).view(B, T, DIM)


class GPT2(nn.Module):
    def __init__(self, seed, std=0.02):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, DIM)
        self.wpe = nn.Embedding(CTX, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYERS))
        self.ln_f = nn.LayerNorm(DIM, eps=EPS)
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if "ln_" in name:
                continue  # LayerNorm: weight 1, bias 0 (nn.LayerNorm's own init)
            if name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        self.cache = None

    def new_cache(self, batch):
        dt = self.wte.weight.dtype
        shape = (N_LAYERS, batch, N_HEADS, CTX, HEAD_DIM)
        self.cache = (torch.zeros(shape, dtype=dt), torch.zeros(shape, dtype=dt))

    def blocks_forward(self, tokens, pos, use_cache=True):
        """tokens [B, T] at positions pos..; returns the last block's output [B, T, DIM]."""
        T = tokens.shape[1]
        x = F.embedding(tokens, self.wte.weight) + self.wpe.weight[pos : pos + T]
        for li, blk in enumerate(self.blocks):
            kc, vc = (self.cache[0][li], self.cache[1][li]) if use_cache else (None, None)
            x = blk(x, kc, vc, pos)
        return x

    def head(self, x):
        x = F.layer_norm(x, (DIM,), self.ln_f.weight, self.ln_f.bias, EPS)
        if x.dim() == 1:
            return torch.mv(self.wte.weight, x)  # tied head
        return F.linear(x, self.wte.weight)


def timed(fn, reps):
    """One warm-up call, then the best wall time of reps calls (fn returns its own timing)."""
    fn()
    return min(fn() for _ in range(reps))


def main():
    ap = argparse.ArgumentParser(description="PyTorch GPT-2 small prefill/decode/activations benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-bf16", action="store_true", help="skip the informational bfloat16 decode")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    res = {"impl": "pytorch"}
    with torch.inference_mode():
        model = GPT2(args.seed).eval()
        g = torch.Generator().manual_seed(args.seed + 1)
        toks = torch.randint(0, VOCAB, (ACT_CALLS * NSEQ, SEQ), generator=g)
        long_prompt = toks[: LONG // SEQ].reshape(1, LONG)
        all_logits = torch.empty(NSEQ, SEQ, VOCAB)
        act_buf = torch.empty(ACT_CALLS * NSEQ * SEQ, DIM)
        act_off = [0]

        def prefill_512():
            model.new_cache(1)
            t0 = time.perf_counter()
            x = model.blocks_forward(long_prompt, 0)
            logits = model.head(x[0, -1])  # last position only
            t1 = time.perf_counter()
            assert logits.shape == (VOCAB,)
            return t1 - t0

        model.new_cache(NSEQ)
        batch_cache = model.cache

        def prefill_8x128():
            model.cache = batch_cache
            t0 = time.perf_counter()
            x = model.blocks_forward(toks[:NSEQ], 0)
            x = F.layer_norm(x, (DIM,), model.ln_f.weight, model.ln_f.bias, EPS)
            torch.matmul(x, model.wte.weight.t(), out=all_logits)
            t1 = time.perf_counter()
            return t1 - t0

        def decode():
            model.new_cache(1)
            x = model.blocks_forward(toks[:1, :PROMPT], 0)
            tok = int(torch.argmax(model.head(x[0, -1])))
            t0 = time.perf_counter()
            for pos in range(PROMPT, PROMPT + NEW):
                x = model.blocks_forward(torch.tensor([[tok]]), pos)
                tok = int(torch.argmax(model.head(x[0, -1])))
            t1 = time.perf_counter()
            return t1 - t0

        def capture(_mod, _inp, out):
            n = out.shape[0] * out.shape[1]
            act_buf[act_off[0] : act_off[0] + n].copy_(out.reshape(n, DIM))
            act_off[0] += n

        def activations():
            act_off[0] = 0
            t0 = time.perf_counter()
            for c in range(ACT_CALLS):
                model.blocks_forward(toks[c * NSEQ : (c + 1) * NSEQ], 0, use_cache=False)
            t1 = time.perf_counter()
            assert act_off[0] == ACT_CALLS * NSEQ * SEQ
            return t1 - t0

        res["prefill_512_tok_s"] = round(LONG / timed(prefill_512, args.reps), 2)
        res["prefill_8x128_tok_s"] = round(NSEQ * SEQ / timed(prefill_8x128, args.reps), 2)
        del batch_cache
        model.cache = None
        res["decode_tok_s"] = round(NEW / timed(decode, args.reps), 2)
        handle = model.blocks[ACT_LAYER].register_forward_hook(capture)
        res["activations_tok_s"] = round(ACT_CALLS * NSEQ * SEQ / timed(activations, args.reps), 2)
        handle.remove()
        if not args.no_bf16:
            model.to(torch.bfloat16)
            res["decode_bf16_tok_s"] = round(NEW / timed(decode, args.reps), 2)
    res["threads"] = args.threads
    res["torch"] = torch.__version__
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
