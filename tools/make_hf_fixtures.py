#!/usr/bin/env python3
"""make_hf_fixtures.py - small random-weight Hugging Face checkpoints plus the logits and
activations that transformers computes for them, for lumen's model and hook tests.

For each configuration below a model is built with transformers (float32, eager
attention, eval mode), its weights are re-drawn from a fixed numpy generator and it
is saved with save_pretrained (safetensors) to

  <out>/<name>/config.json, model.safetensors (or model-0000k-of-0000n.safetensors
  + model.safetensors.index.json for llama_tied, which is saved sharded)

and its expectations to <out>/<name>.expect.safetensors. The checkpoint of the
shared asset tiny-random-gpt2 is not copied; only its expectation file is written.

  gpt2       GPT2Config: n_embd 32, 2 layers, 4 heads, n_positions 64, vocab 300,
             gelu_new, tied lm_head (no lm_head.weight in the file)
  llama      LlamaConfig: hidden 32, inter 64, 2 layers, 4 heads / 2 KV heads (GQA),
             vocab 320, rope_theta 5e5, llama3 rope scaling (factor 8, low 1, high 4,
             original_max_position_embeddings 256), untied lm_head
  llama_tied the llama shape with tied embeddings, default rope, saved in 3 shards
  mistral    MistralConfig: hidden 32, inter 64, 2 layers, 4 heads / 1 KV head,
             vocab 300, no sliding window, untied
  qwen2      Qwen2Config: hidden 32, inter 64, 2 layers, 4 heads / 2 KV heads, vocab
             300, tied, non-zero q/k/v biases, no sliding window
  tiny_random_gpt2  <assets>/models/tiny-random-gpt2 as published (5 layers, vocab 1000)

config.json is written by save_pretrained in transformers 5's layout (rope settings
in "rope_parameters": {"rope_type", "rope_theta", ...}, "dtype"), except for llama
and mistral, whose config.json is rewritten in the transformers 4 layout that
checkpoints on the Hub use (top-level "rope_theta", "rope_scaling" {"rope_type":
"llama3", ...} for llama, "torch_dtype"); transformers reads both the same way.

Every expectation file holds (B = 2 sequences of T = 7 tokens, no padding, positions
0..T-1, d = hidden size, V = vocab size, L = layers):

  input_ids             I32 [B, T]
  logits                F32 [B, T, V]
  hidden_states.{i}     F32 [B, T, d]  i = 0..L, exactly as transformers returns them
                        with output_hidden_states=True: [0] is the embedding output,
                        [i] (0 < i < L) the output of layer i-1, and [L] the output of
                        the last layer AFTER the final norm (ln_f / norm).
  resid_pre.{l}         F32 [B, T, d]  input of layer l (l = 0..L-1)
  attn_out.{l}          F32 [B, T, d]  attention output as added to the residual
                        (gpt2: after c_proj and resid_dropout; llama family: o_proj)
  resid_mid.{l}         F32 [B, T, d]  resid_pre + attn_out (input of ln_2 /
                        post_attention_layernorm)
  mlp_out.{l}           F32 [B, T, d]  MLP output as added to the residual
  resid_post.{l}        F32 [B, T, d]  output of layer l, never normed; so
                        resid_post.{l} == hidden_states.{l+1} for l < L-1 and
                        hidden_states.{L} == final_norm(resid_post.{L-1})
  logits_zero_mlp.{l}   F32 [B, T, V]  logits when layer l's MLP output is replaced
                        by zeros (l = 0 and l = L-1)

These names map to TransformerLens hook points: blocks.{l}.hook_resid_pre,
hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post.

What this script checks before it writes an expectation file (the checkpoint is
saved first, since the numpy reference and the reload read it back):

* the captured activations add up: resid_mid = resid_pre + attn_out, resid_post =
  resid_mid + mlp_out, hidden_states[l+1] = resid_post[l] below the last layer and
  hidden_states[L] = final_norm(resid_post[L-1]); the last layer's resid_post differs
  from hidden_states[L];
* an independent float64 numpy forward pass written from the papers' definitions
  (LayerNorm / RMSNorm, gelu_new / SwiGLU, rotate-half RoPE with llama3 frequency
  scaling, GQA, q/k/v biases) reproduces the logits and every activation
  (max abs diff / max abs < 1e-5);
* the llama3 rope scaling matters here: the rotary frequencies fall in all three of
  its regimes (kept, smoothed, divided by factor), and the logits differ from those
  with plain rope, with every frequency divided by the factor, and without the
  smoothing, each by more than 1e-3 relative (ten times lumen's tolerance);
* logits are not degenerate (std > 0.1) and zeroing an MLP changes them;
* the checkpoint reloads with from_pretrained and gives the same logits.

Deterministic: weights come from numpy's PCG64 generator (identical on every
machine), so the checkpoints are byte-identical across runs; the expectations are
computed single-threaded and are identical across runs on one machine (other
machines may differ in the last bits). Usage:

  python tools/make_hf_fixtures.py [--assets DIR] [--out DIR]

--assets defaults to ../shared/assets relative to the repository root and --out to
tests/fixtures/hf.
"""

import argparse
import glob
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T = 2, 7

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # With head_dim 8 and theta 5e5 the rotary wavelengths are 6.3, 167, 4443 and
    # 118000 positions; an original context of 256 puts them in all three regimes
    # of llama3 scaling (< 64 kept, 64..256 smoothed, > 256 divided by factor).
    "original_max_position_embeddings": 256,
}

# (name, config, shard size or None, weight seed, legacy config.json layout)
CONFIGS = [
    (
        "gpt2",
        lambda: GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            vocab_size=300,
            # GPT2Config's default 50256 would lie outside this vocabulary.
            bos_token_id=299,
            eos_token_id=299,
        ),
        None,
        1,
        False,
    ),
    (
        "llama",
        lambda: LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=320,
            max_position_embeddings=1024,
            rope_parameters=dict(LLAMA3_ROPE),
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        None,
        2,
        True,
    ),
    (
        "llama_tied",
        lambda: LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=320,
            max_position_embeddings=128,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
        "60KB",
        3,
        False,
    ),
    (
        "mistral",
        lambda: MistralConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            vocab_size=300,
            max_position_embeddings=128,
            sliding_window=None,
            tie_word_embeddings=False,
        ),
        None,
        4,
        True,
    ),
    (
        "qwen2",
        lambda: Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=300,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
        None,
        5,
        False,
    ),
]


def input_ids_for(vocab):
    """Two fixed rows mixing low ids, middling ids and the top of the vocabulary."""
    rows = [
        [1, 5, 17, 99, vocab - 1, 42, vocab - 3],
        [vocab - 2, 0, 250 % vocab, 7, 3, vocab // 2, vocab - 1],
    ]
    return np.array(rows, dtype=np.int32)


# ---------------------------------------------------------------------------------
# model construction


def is_norm(module):
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def reinit(model, seed):
    """Draw every parameter again from numpy's PCG64: N(0, 0.2) for matrices and
    embeddings, 1 + N(0, 0.1) for norm weights, N(0, 0.1) for biases. The default
    init (std 0.02) makes logits tiny, which would hide small bugs."""
    rng = np.random.Generator(np.random.PCG64(seed))
    norm_params = set()
    for mname, mod in model.named_modules():
        if is_norm(mod):
            for pname, _ in mod.named_parameters(recurse=False):
                norm_params.add((mname + "." if mname else "") + pname)
    with torch.no_grad():
        # named_parameters() lists a tied parameter once, in module order: stable.
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if name in norm_params and name.endswith("weight"):
                v = 1.0 + 0.1 * rng.standard_normal(shape)
            elif p.ndim >= 2:
                v = 0.2 * rng.standard_normal(shape)
            else:
                v = 0.1 * rng.standard_normal(shape)
            p.copy_(torch.from_numpy(v.astype(np.float32)))


def build(cfg, seed):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    reinit(model, seed)
    model.eval()
    return model


# ---------------------------------------------------------------------------------
# running transformers with hooks


def parts(model):
    """(decoder layers, attention, mlp, ln before mlp, final norm) per family."""
    if model.config.model_type == "gpt2":
        tr = model.transformer
        return [(b, b.attn, b.mlp, b.ln_2) for b in tr.h], tr.ln_f
    m = model.model
    return [(l, l.self_attn, l.mlp, l.post_attention_layernorm) for l in m.layers], m.norm


def first(x):
    return x[0] if isinstance(x, tuple) else x


def run(model, ids, zero_mlp_layer=None):
    """Forward pass; returns (logits, hidden_states list, captured activations)."""
    acts = {}
    handles = []
    layers, _ = parts(model)
    for l, (layer, attn, mlp, ln_mid) in enumerate(layers):

        def pre_layer(mod, args, kwargs, l=l):
            x = args[0] if args else kwargs["hidden_states"]
            acts["resid_pre.%d" % l] = x.detach().clone()

        def post_layer(mod, args, kwargs, out, l=l):
            acts["resid_post.%d" % l] = first(out).detach().clone()

        def post_attn(mod, args, kwargs, out, l=l):
            acts["attn_out.%d" % l] = first(out).detach().clone()

        def pre_mid(mod, args, l=l):
            acts["resid_mid.%d" % l] = args[0].detach().clone()

        def post_mlp(mod, args, out, l=l):
            if l == zero_mlp_layer:
                out = torch.zeros_like(out)
            acts["mlp_out.%d" % l] = out.detach().clone()
            return out

        handles.append(layer.register_forward_pre_hook(pre_layer, with_kwargs=True))
        handles.append(layer.register_forward_hook(post_layer, with_kwargs=True))
        handles.append(attn.register_forward_hook(post_attn, with_kwargs=True))
        handles.append(ln_mid.register_forward_pre_hook(pre_mid))
        handles.append(mlp.register_forward_hook(post_mlp))
    try:
        with torch.no_grad():
            out = model(
                input_ids=torch.from_numpy(ids.astype(np.int64)),
                output_hidden_states=True,
                use_cache=False,
            )
    finally:
        for h in handles:
            h.remove()
    hs = [h.detach().clone() for h in out.hidden_states]
    return out.logits.detach().clone(), hs, acts


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check(cond, msg):
    if not cond:
        sys.exit("make_hf_fixtures: " + msg)


# ---------------------------------------------------------------------------------
# independent numpy reference (float64)


def np_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def np_gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_attention(q, k, v):
    """q [B, H, T, hd], k/v [B, Hkv, T, hd]; causal softmax attention, GQA by
    sharing each KV head among H/Hkv consecutive query heads."""
    rep = q.shape[1] // k.shape[1]
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    t = q.shape[2]
    s = s + np.triu(np.full((t, t), -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True))
    p = s / s.sum(-1, keepdims=True)
    return p @ v


def np_inv_freq(rp, head_dim):
    """Rotary inverse frequencies, llama3 scaling written out from Meta's
    reference (apply_scaling in llama-models)."""
    theta = rp["rope_theta"]
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if rp.get("rope_type", "default") == "default":
        return inv
    assert rp["rope_type"] == "llama3"
    factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < old / hi:
            out.append(f)
        elif wl > old / lo:
            out.append(f / factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
    return np.array(out)


def np_rope(x, inv_freq):
    """Rotate-half rope (pairs i, i + hd/2) as in HF checkpoints. x [B, H, T, hd]."""
    t = x.shape[2]
    ang = np.arange(t, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


def np_forward(sd, cfg, ids, zero_mlp_layer=None):
    """Float64 forward pass from a state dict of numpy arrays; returns (logits, acts)."""
    W = {k: v.astype(np.float64) for k, v in sd.items()}
    acts = {}
    bsz, t = ids.shape
    heads_split = lambda y, h: y.reshape(bsz, t, h, -1).transpose(0, 2, 1, 3)
    heads_merge = lambda y: y.transpose(0, 2, 1, 3).reshape(bsz, t, -1)
    if cfg.model_type == "gpt2":
        eps, nh = cfg.layer_norm_epsilon, cfg.n_head
        check(cfg.activation_function == "gelu_new", "numpy reference only knows gelu_new")
        check(not cfg.scale_attn_by_inverse_layer_idx and cfg.scale_attn_weights, "gpt2 attention scaling")
        x = W["transformer.wte.weight"][ids] + W["transformer.wpe.weight"][np.arange(t)][None]
        for l in range(cfg.n_layer):
            p = "transformer.h.%d." % l
            acts["resid_pre.%d" % l] = x
            h = np_layernorm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
            qkv = h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]  # Conv1D: [in, out]
            q, k, v = np.split(qkv, 3, axis=-1)
            a = heads_merge(np_attention(heads_split(q, nh), heads_split(k, nh), heads_split(v, nh)))
            a = a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
            acts["attn_out.%d" % l] = a
            x = x + a
            acts["resid_mid.%d" % l] = x
            h = np_layernorm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
            m = np_gelu_new(h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
            m = m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
            if l == zero_mlp_layer:
                m = np.zeros_like(m)
            acts["mlp_out.%d" % l] = m
            x = x + m
            acts["resid_post.%d" % l] = x
        xf = np_layernorm(x, W["transformer.ln_f.weight"], W["transformer.ln_f.bias"], eps)
        logits = xf @ W["transformer.wte.weight"].T
        return logits, acts, xf

    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // nh
    eps = cfg.rms_norm_eps
    check(cfg.hidden_act == "silu", "numpy reference only knows silu")
    inv_freq = np_inv_freq(cfg.rope_parameters, hd)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(cfg.num_hidden_layers):
        p = "model.layers.%d." % l
        lin = lambda y, n: y @ W[p + n + ".weight"].T + (W[p + n + ".bias"] if p + n + ".bias" in W else 0.0)
        acts["resid_pre.%d" % l] = x
        h = np_rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = np_rope(heads_split(lin(h, "self_attn.q_proj"), nh), inv_freq)
        k = np_rope(heads_split(lin(h, "self_attn.k_proj"), nkv), inv_freq)
        v = heads_split(lin(h, "self_attn.v_proj"), nkv)
        a = lin(heads_merge(np_attention(q, k, v)), "self_attn.o_proj")
        acts["attn_out.%d" % l] = a
        x = x + a
        acts["resid_mid.%d" % l] = x
        h = np_rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, "mlp.gate_proj")
        m = lin(g / (1.0 + np.exp(-g)) * lin(h, "mlp.up_proj"), "mlp.down_proj")
        if l == zero_mlp_layer:
            m = np.zeros_like(m)
        acts["mlp_out.%d" % l] = m
        x = x + m
        acts["resid_post.%d" % l] = x
    xf = np_rmsnorm(x, W["model.norm.weight"], eps)
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return xf @ head.T, acts, xf


def load_state_dict_files(model_dir):
    """All tensors of a saved checkpoint (single file or shards), as numpy."""
    from safetensors.numpy import load_file

    sd = {}
    for f in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        for k, v in load_file(f).items():
            check(k not in sd, "%s: tensor %s in two shards" % (model_dir, k))
            sd[k] = v
    return sd


# ---------------------------------------------------------------------------------
# one fixture


def expectations(name, model, model_dir, ids):
    cfg = model.config
    layers, final_norm = parts(model)
    L = len(layers)
    logits, hs, acts = run(model, ids)
    check(len(hs) == L + 1, "%s: %d hidden states for %d layers" % (name, len(hs), L))
    std = float(logits.std())
    check(std > 0.1, "%s: degenerate logits (std %.3g)" % (name, std))

    # The activations must add up and line up with hidden_states.
    for l in range(L):
        r = lambda s: acts["%s.%d" % (s, l)]
        check(torch.equal(r("resid_mid"), r("resid_pre") + r("attn_out")), "%s: resid_mid %d" % (name, l))
        check(torch.equal(r("resid_post"), r("resid_mid") + r("mlp_out")), "%s: resid_post %d" % (name, l))
        check(torch.equal(r("resid_pre"), hs[l]), "%s: hidden_states[%d] is not resid_pre" % (name, l))
        if l < L - 1:
            check(torch.equal(r("resid_post"), hs[l + 1]), "%s: hidden_states[%d]" % (name, l + 1))
    with torch.no_grad():
        normed = final_norm(acts["resid_post.%d" % (L - 1)])
    check(torch.equal(normed, hs[L]), "%s: hidden_states[L] is not final_norm(resid_post[L-1])" % name)
    check(
        rel_err(hs[L], acts["resid_post.%d" % (L - 1)]) > 0.1,
        "%s: final norm does not change the last hidden state" % name,
    )

    exp = {"input_ids": ids.astype(np.int32), "logits": logits.numpy()}
    for i, h in enumerate(hs):
        exp["hidden_states.%d" % i] = h.numpy()
    for k, v in acts.items():
        exp[k] = v.numpy()
    for l in sorted({0, L - 1}):
        zl, _, zacts = run(model, ids, zero_mlp_layer=l)
        check(not zacts["mlp_out.%d" % l].any(), "%s: zeroing hook" % name)
        check(rel_err(zl, logits) > 1e-2, "%s: zeroing MLP %d changes nothing" % (name, l))
        exp["logits_zero_mlp.%d" % l] = zl.numpy()

    # Independent float64 reference from the files as saved.
    sd = load_state_dict_files(model_dir)
    ref_logits, ref_acts, ref_final = np_forward(sd, cfg, ids)
    worst = rel_err(exp["logits"], ref_logits)
    check(worst < 1e-5, "%s: numpy reference logits differ (%.2e)" % (name, worst))
    check(rel_err(exp["hidden_states.%d" % L], ref_final) < 1e-5, "%s: numpy final norm" % name)
    for k, v in ref_acts.items():
        e = rel_err(exp[k], v)
        check(e < 1e-5, "%s: numpy reference %s differs (%.2e)" % (name, k, e))
        worst = max(worst, e)
    for l in sorted({0, L - 1}):
        zl, _, _ = np_forward(sd, cfg, ids, zero_mlp_layer=l)
        e = rel_err(exp["logits_zero_mlp.%d" % l], zl)
        check(e < 1e-5, "%s: numpy reference logits_zero_mlp.%d (%.2e)" % (name, l, e))
        worst = max(worst, e)
    print("  %s: numpy float64 reference agrees, max rel err %.1e; logits std %.2f" % (name, worst, std))

    # The saved checkpoint reloads to the same logits.
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        rl = reloaded(input_ids=torch.from_numpy(ids.astype(np.int64)), use_cache=False).logits
    check(torch.equal(rl, logits), "%s: reloaded checkpoint gives other logits" % name)
    if hasattr(cfg, "rope_parameters"):
        check(reloaded.config.rope_parameters == cfg.rope_parameters, "%s: reloaded rope parameters differ" % name)
    return exp


def check_llama3_rope(model, ids, logits):
    """The llama3 fixture must tell apart plain rope, dividing every frequency by the
    factor, and skipping the smoothing between the two regimes."""
    rp = model.config.rope_parameters
    hd = model.config.head_dim
    base = 1.0 / rp["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    wl = 2 * math.pi / base
    hi_wl = rp["original_max_position_embeddings"] / rp["high_freq_factor"]
    lo_wl = rp["original_max_position_embeddings"] / rp["low_freq_factor"]
    kept, divided = wl < hi_wl, wl > lo_wl
    smoothed = ~kept & ~divided
    check(kept.any() and divided.any() and smoothed.any(), "llama3 rope: not all three regimes are used")
    rot = model.model.rotary_emb
    hf = rot.inv_freq.double().numpy()
    check(np.allclose(hf, np_inv_freq(rp, hd), rtol=1e-6), "llama3 rope: transformers' frequencies differ")
    no_smooth = np.where(kept, base, base / rp["factor"])
    saved = rot.inv_freq.clone()
    try:
        for what, f in (("plain rope", base), ("all divided", base / rp["factor"]), ("no smoothing", no_smooth)):
            rot.inv_freq.copy_(torch.from_numpy(f.astype(np.float32)))
            with torch.no_grad():
                other = model(input_ids=torch.from_numpy(ids.astype(np.int64)), use_cache=False).logits
            e = rel_err(other, logits)
            check(e > 1e-3, "llama3 rope: %s gives nearly the same logits (%.2e)" % (what, e))
            print("  llama3 rope vs %s: logits differ by %.2e relative" % (what, e))
    finally:
        rot.inv_freq.copy_(saved)
    print("  llama3 rope inv_freq:", " ".join("%.6g" % v for v in hf))


def legacy_config(path):
    """Rewrite config.json in the layout of transformers 4 that checkpoints on the Hub
    use (Llama 3.x, Mistral): top-level rope_theta, rope_scaling for scaled rope and
    torch_dtype, instead of transformers 5's rope_parameters and dtype. Both load to
    the same model in transformers (checked by the reload), so lumen must read both."""
    with open(path) as f:
        c = json.load(f)
    rp = dict(c.pop("rope_parameters"))
    c["rope_theta"] = rp.pop("rope_theta")
    if rp.get("rope_type", "default") != "default":
        c["rope_scaling"] = rp
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    with open(path, "w") as f:
        f.write(json.dumps(c, indent=2, sort_keys=True) + "\n")


def write_expect(path, exp, model_label):
    # One metadata key only: safetensors keeps metadata in a hash map, so several
    # keys come out in a different order on every run.
    meta = {
        "source": "tools/make_hf_fixtures.py; %s; transformers %s, torch %s"
        % (model_label, transformers.__version__, torch.__version__.split("+")[0])
    }
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(exp.items())}, path, metadata=meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", default=os.path.join(REPO, "..", "shared", "assets"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "hf"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)

    for name, make_cfg, shard, seed, legacy in CONFIGS:
        print("== %s" % name)
        model = build(make_cfg(), seed)
        ids = input_ids_for(model.config.vocab_size)
        mdir = os.path.join(args.out, name)
        # Save into a fresh directory so stale shards never survive a rerun.
        tmp = tempfile.mkdtemp(prefix=".%s." % name, dir=args.out)
        try:
            kw = {"max_shard_size": shard} if shard else {}
            model.save_pretrained(tmp, **kw)
            gen = os.path.join(tmp, "generation_config.json")
            if os.path.exists(gen):
                os.remove(gen)  # not part of the fixture: lumen reads config.json only
            if legacy:
                legacy_config(os.path.join(tmp, "config.json"))
            if shard:
                check(
                    os.path.exists(os.path.join(tmp, "model.safetensors.index.json"))
                    and len(glob.glob(os.path.join(tmp, "model-*.safetensors"))) >= 2,
                    "%s: not saved sharded" % name,
                )
            if os.path.isdir(mdir):
                shutil.rmtree(mdir)
            os.rename(tmp, mdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        exp = expectations(name, model, mdir, ids)
        if model.config.model_type == "llama" and model.config.rope_parameters["rope_type"] == "llama3":
            check_llama3_rope(model, ids, torch.from_numpy(exp["logits"]))
        write_expect(os.path.join(args.out, name + ".expect.safetensors"), exp, "random init, " + name)

    name = "tiny_random_gpt2"
    print("== %s" % name)
    mdir = os.path.join(args.assets, "models", "tiny-random-gpt2")
    check(os.path.isfile(os.path.join(mdir, "model.safetensors")), "no model at %s (use --assets DIR)" % mdir)
    model = AutoModelForCausalLM.from_pretrained(mdir, attn_implementation="eager", dtype=torch.float32).eval()
    ids = input_ids_for(model.config.vocab_size)
    exp = expectations(name, model, mdir, ids)
    write_expect(os.path.join(args.out, name + ".expect.safetensors"), exp, "assets/models/tiny-random-gpt2")

    # mkdtemp and safetensors create their files private (0700 / 0600); give them the
    # usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    total = 0
    print("== sizes")
    for root, _, files in sorted(os.walk(args.out)):
        os.chmod(root, 0o777 & ~umask)
        for f in sorted(files):
            p = os.path.join(root, f)
            os.chmod(p, 0o666 & ~umask)
            n = os.path.getsize(p)
            total += n
            print("  %8d  %s" % (n, os.path.relpath(p, args.out)))
    print("  %8d  total" % total)


if __name__ == "__main__":
    main()
