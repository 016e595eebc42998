#!/usr/bin/env python3
"""Checks that the model lumen trained (models/lumen-tiny) loads in Hugging Face transformers
with the same logits: writes tests/fixtures/hf/lumen_tiny.expect.safetensors with "input_ids"
(I32 [T], the encoding of a fixed text by the model's own tokenizer.json through the
`tokenizers` library) and transformers' "logits" (F32 [T, V]). tests/test_hf_save.c loads the
same directory with lumen, checks its tokenizer gives the same ids, and compares logits within
1e-4. Rerun it whenever `make model` replaces the model.

Usage: python tools/make_trained_fixture.py [--model models/lumen-tiny] [--out DIR]
"""
import argparse
import os

import numpy as np
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

TEXT = "Once upon a time, there was a little girl. Three days from Monday is Thursday."


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(root, "models", "lumen-tiny"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "hf"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    ids = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json")).encode(TEXT).ids
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lumen_tiny.expect.safetensors")
    save_file({"input_ids": np.array(ids, dtype=np.int32), "logits": logits}, path, metadata={"text": TEXT})
    print("wrote", path, logits.shape)


if __name__ == "__main__":
    main()
