#!/usr/bin/env python3
"""make_fixtures.py - reference logits for lumen's tests, computed by Hugging Face transformers.

For each GGUF model below, transformers loads the file itself (GGUF support,
float32, eager attention), runs one forward pass over a fixed token sequence and
the logits of every position are written as raw little-endian float32 [T, V]
(row-major) next to a JSON description:

  tests/fixtures/llama2_tiny_random_logits.{f32,json}  llama-2-tiny-random.gguf
      F16 matrices, 32000-token vocab, 1 layer, emb 8, 2 heads; 8 tokens
  tests/fixtures/stories260k_logits.{f32,json}         stories260K.gguf
      F32, vocab 512, 5 layers, dim 64, 8 heads / 4 KV heads (GQA); 16 tokens

The JSON is {"model", "tokens", "shape": [T, V], "source"}.

What this script checks before it writes anything (and why):

* GGUF stores Q and K rows permuted for llama.cpp's interleaved RoPE (pairs
  2i, 2i+1), and transformers un-permutes them at load for its rotate-half RoPE.
  A wrong un-permutation gives plausible-looking but wrong logits, so:
  - an independent float64 numpy forward pass that reads the GGUF tensors
    directly (gguf.GGUFReader) and applies interleaved RoPE, with no
    permutation at all, must agree with transformers' logits (max abs
    difference / max abs logit < 1e-5) for both models, GQA included;
  - stories260K greedy decoding from BOS with transformers, decoded with the
    vocabulary stored in the GGUF, must begin with
    "Once upon a time, there was a little girl named Lily." (the text that
    llama2.c's documentation prints for this model).
* The GGUF files set the padding token id to 0xFFFFFFFF, which transformers
  rejects; the config's pad_token_id is cleared before loading (it plays no
  part in a forward pass). transformers' GGUF tokenizer loader fails on the
  same id, which is why text is decoded from the GGUF vocabulary here.

Deterministic: fixed token ids, no sampling, single-threaded torch. Usage:

  python tools/make_fixtures.py [--assets DIR] [--out DIR]

--assets defaults to ../shared/assets relative to the repository root and
--out to tests/fixtures.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
import gguf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STORIES_PREFIX = "Once upon a time, there was a little girl named Lily."

# (name, model dir under assets/models, gguf file, fixed token ids). The ids mix
# ordinary tokens, the top of the vocabulary and low special/byte ids.
FIXTURES = [
    (
        "llama2_tiny_random",
        "llama-2-tiny-random",
        "llama-2-tiny-random.gguf",
        [1, 15043, 3186, 29892, 450, 31999, 29871, 13],
    ),
    (
        "stories260k",
        "stories260K",
        "stories260K.gguf",
        [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 511, 3, 259, 100],
    ),
]


def load_hf(model_dir, gguf_name):
    cfg = AutoConfig.from_pretrained(model_dir, gguf_file=gguf_name)
    if cfg.pad_token_id is not None and not (0 <= cfg.pad_token_id < cfg.vocab_size):
        cfg.pad_token_id = None
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=gguf_name, config=cfg, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return model


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def numpy_reference(path, tokens):
    """Llama forward in float64 straight from the GGUF tensors, interleaved RoPE."""
    r = gguf.GGUFReader(path)
    W = {t.name: np.asarray(t.data, dtype=np.float64) for t in r.tensors}
    n_layers = int(field(r, "llama.block_count"))
    n_heads = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv", n_heads))
    eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
    theta = float(field(r, "llama.rope.freq_base", 10000.0))
    dim = W["token_embd.weight"].shape[1]
    hd = dim // n_heads
    T = len(tokens)

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    freqs = theta ** (-np.arange(0, hd, 2) / hd)  # [hd/2]
    ang = np.arange(T)[:, None] * freqs[None, :]  # [T, hd/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # x [T, H, hd], pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    x = W["token_embd.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for L in range(n_layers):
        p = "blk.%d." % L
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, n_heads, hd))
        k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, n_kv, hd))
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
        rep = n_heads // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        att = np.einsum("hts,shd->thd", s, v).reshape(T, dim)
        x = x + att @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T
        u = h @ W[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "ffn_down.weight"].T
    x = rms(x, W["output_norm.weight"])
    out = W.get("output.weight", W["token_embd.weight"])
    return x @ out.T


def gguf_decode(path, ids):
    """SentencePiece-style decoding with the vocabulary stored in the GGUF."""
    r = gguf.GGUFReader(path)
    vocab = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    out = bytearray()
    for i in ids:
        piece = vocab[i]
        if types is not None and types[i] == 6 and piece.startswith("<0x"):  # byte token
            out.append(int(piece[3:-1], 16))
        elif types is not None and types[i] == 3:  # control (BOS/EOS)
            continue
        else:
            out += piece.replace("\u2581", " ").encode("utf-8")
    text = out.decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def write_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", default=os.path.join(REPO, "..", "shared", "assets"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tv = transformers.__version__.split(".")
    source = "transformers %s.%s via GGUF" % (tv[0], tv[1])
    os.makedirs(args.out, exist_ok=True)

    for name, model_dir, gguf_name, tokens in FIXTURES:
        mdir = os.path.join(args.assets, "models", model_dir)
        path = os.path.join(mdir, gguf_name)
        if not os.path.exists(path):
            sys.exit("make_fixtures: %s not found (set --assets)" % path)
        model = load_hf(mdir, gguf_name)
        V = model.config.vocab_size
        assert all(0 <= t < V for t in tokens), name
        with torch.inference_mode():
            logits = model(torch.tensor([tokens])).logits[0].float().numpy()
        T = len(tokens)
        assert logits.shape == (T, V), logits.shape

        err = rel_err(logits.astype(np.float64), numpy_reference(path, tokens))
        print("%s: transformers vs independent numpy (interleaved RoPE, raw GGUF): rel err %.2e" % (name, err))
        if err >= 1e-5:
            sys.exit("make_fixtures: %s: transformers disagrees with the GGUF reference (Q/K permutation?)" % name)

        if model_dir == "stories260K":
            with torch.inference_mode():
                gen = model.generate(
                    torch.tensor([[1]]), max_new_tokens=40, do_sample=False, pad_token_id=0
                )[0].tolist()
            text = gguf_decode(path, gen)
            print("%s: greedy from BOS: %r" % (name, text[:80]))
            if not text.startswith(STORIES_PREFIX):
                sys.exit("make_fixtures: stories260K greedy text is wrong: %r" % text)

        rel = os.path.relpath(path, args.assets)
        f32 = os.path.join(args.out, name + "_logits.f32")
        js = os.path.join(args.out, name + "_logits.json")
        write_atomic(f32, np.ascontiguousarray(logits, dtype="<f4").tobytes())
        meta = {"model": rel, "tokens": tokens, "shape": [T, V], "source": source}
        write_atomic(js, (json.dumps(meta) + "\n").encode())
        print("wrote %s (%d bytes, [%d, %d] float32 LE) and %s" % (f32, T * V * 4, T, V, js))


if __name__ == "__main__":
    main()
