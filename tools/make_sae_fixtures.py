#!/usr/bin/env python3
"""make_sae_fixtures.py - SAE fixtures for tests/test_sae.c, made and checked with SAELens (PyPI: sae_lens).

Two directions, both proved here with SAELens' own code:

(a) SAELens -> lumen. Small SAEs (d_in 16, d_sae 64: standard, topk k=4, topk saved with
    rescale_acts_by_decoder_norm, jumprelu) with seeded random weights are saved by SAELens'
    save_model into tests/fixtures/sae/<name>/, and SAELens' encode/decode of fixed inputs into
    tests/fixtures/sae/<name>.expect.safetensors (x, f, x_hat). test_sae.c loads each directory
    with lm_sae_load and matches f and x_hat within 1e-5.

(b) lumen -> SAELens. test_sae.c builds two SAEs from exact closed-form weights, saves them with
    lm_sae_save and compares the bytes with tests/fixtures/sae/lumen_saved/<name>/; it also
    checks lumen's own encode/decode against lumen_saved/<name>.expect.safetensors. This script
    loads those directories with SAE.load_from_disk and asserts that SAELens' encode/decode of
    the stored x match lumen's f and x_hat within 1e-5.

Regenerating (from the repository root, after building):
    LUMEN_SAE_WRITE_FIXTURES=tests/fixtures/sae/lumen_saved build/test_sae   # writes (b)'s files
    python tools/make_sae_fixtures.py                                         # writes (a), checks (b)
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

import sae_lens
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "sae")
D_IN, D_SAE, K, N = 16, 64, 4, 8
TOL = 1e-5

META = dict(
    model_name="tiny-gpt2",
    hook_name="blocks.0.hook_resid_post",
    context_size=128,
    prepend_bos=True,
)


def make(name, seed):
    g = torch.Generator().manual_seed(seed)
    common = dict(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu", apply_b_dec_to_input=True)
    if name == "standard":
        sae = StandardSAE(StandardSAEConfig(**common))
    elif name == "topk":
        sae = TopKSAE(TopKSAEConfig(k=K, **common))
    elif name == "topk_rescale":
        sae = TopKSAE(TopKSAEConfig(k=K, rescale_acts_by_decoder_norm=True, **common))
    elif name == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(**common))
    else:
        raise ValueError(name)
    for k, v in META.items():
        sae.cfg.metadata[k] = v
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=g) * 0.4)
        sae.W_dec.copy_(torch.randn(D_SAE, D_IN, generator=g) * 0.4)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g) * 0.2)
        sae.b_dec.copy_(torch.randn(D_IN, generator=g) * 0.2)
        if name == "jumprelu":
            sae.threshold.copy_(torch.rand(D_SAE, generator=g) * 0.5)
    return sae


def write_saelens_fixtures():
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(1234))
    for i, name in enumerate(["standard", "topk", "topk_rescale", "jumprelu"]):
        sae = make(name, 100 + i)
        d = os.path.join(OUT, name)
        sae.save_model(d)
        # what we assert on must be what a reader of the directory gets back
        back = SAE.load_from_disk(d)
        with torch.no_grad():
            f = sae.encode(x)
            xh = sae.decode(f)
            assert torch.allclose(back.decode(back.encode(x)), xh, atol=TOL)
        if name.startswith("topk"):
            assert int((f != 0).sum(dim=-1).max()) <= K
        save_file(
            {"x": x.contiguous(), "f": f.contiguous(), "x_hat": xh.contiguous()},
            os.path.join(OUT, name + ".expect.safetensors"),
        )
        print(f"wrote {d} (nonzeros per row: {(f != 0).sum(dim=-1).tolist()})")


def check_lumen_saved():
    base = os.path.join(OUT, "lumen_saved")
    names = ["standard", "topk"]
    for name in names:
        d = os.path.join(base, name)
        exp = os.path.join(base, name + ".expect.safetensors")
        if not os.path.isdir(d) or not os.path.exists(exp):
            sys.exit(f"{d} or {exp} missing: run LUMEN_SAE_WRITE_FIXTURES={base} build/test_sae first")
        sae = SAE.load_from_disk(d)
        with open(os.path.join(d, "cfg.json")) as fp:
            cfg = json.load(fp)
        assert sae.cfg.architecture() == cfg["architecture"], (sae.cfg.architecture(), cfg["architecture"])
        assert sae.cfg.metadata.hook_name == cfg["metadata"]["hook_name"]
        e = load_file(exp)
        with torch.no_grad():
            f = sae.encode(e["x"])
            xh = sae.decode(f)
        ef = (f - e["f"]).abs().max().item()
        ex = (xh - e["x_hat"]).abs().max().item()
        assert ef < TOL and ex < TOL, f"{name}: SAELens disagrees with lumen: f {ef:.3g}, x_hat {ex:.3g}"
        sp = os.path.join(d, "sparsity.safetensors")
        if os.path.exists(sp):
            s = load_file(sp)["sparsity"]
            assert s.shape == (sae.cfg.d_sae,)
        print(f"SAELens loads lumen's {name} SAE: max |df| {ef:.2g}, max |dx_hat| {ex:.2g}")


def main():
    torch.manual_seed(0)
    print("sae_lens", sae_lens.__version__)
    os.makedirs(OUT, exist_ok=True)
    write_saelens_fixtures()
    check_lumen_saved()


if __name__ == "__main__":
    main()
