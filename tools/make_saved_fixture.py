#!/usr/bin/env python3
"""Checks that a model saved by lumen loads in Hugging Face transformers with the same logits.

Runs `lumen convert` on stories260K (llama2.c format, interleaved RoPE) into a temporary
Hugging Face directory, loads that directory with transformers' LlamaForCausalLM, and writes
tests/fixtures/hf/stories260k_converted.expect.safetensors with "input_ids" (I32 [T]) and
transformers' "logits" (F32 [T, V]). tests/test_hf_save.c converts the same model again and
requires lumen's logits on its own output to match these within 1e-4.

Usage: python tools/make_saved_fixture.py --lumen build/lumen [--assets ../shared/assets] [--out DIR]
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM

IDS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 3, 259, 100, 511, 2, 0, 77]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--lumen", required=True)
    ap.add_argument("--assets", default=os.path.join(root, "..", "shared", "assets"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "hf"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = os.path.join(args.assets, "models", "stories260K", "stories260K.bin")
    with tempfile.TemporaryDirectory() as tmp:
        conv = os.path.join(tmp, "stories260k_hf")
        subprocess.run([args.lumen, "convert", src, "-o", conv], check=True)
        model = AutoModelForCausalLM.from_pretrained(conv, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor([IDS])).logits[0].numpy().astype(np.float32)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "stories260k_converted.expect.safetensors")
    save_file({"input_ids": np.array(IDS, dtype=np.int32), "logits": logits}, path)
    print("wrote", path, logits.shape)


if __name__ == "__main__":
    main()
