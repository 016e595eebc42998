#!/usr/bin/env python3
"""make_grad_fixtures.py - the gradients that PyTorch computes for the committed Hugging Face
fixture checkpoints on one fixed batch, for lumen's backward-pass tests.

For each checkpoint below (written by tools/make_hf_fixtures.py into tests/fixtures/hf)
the model is loaded with transformers (float32, eager attention) in training mode with
every dropout probability set to 0, run on a fixed batch, and the loss

    loss = mean over b < B, t < T-1 of  -log softmax(logits[b, t])[ids[b, t+1]]

(the mean cross-entropy of all B * (T - 1) next-token predictions, computed by
torch.nn.functional.cross_entropy in float32 with reduction "mean") is differentiated
with loss.backward(). Written to <out>/<name>.grad.safetensors:

  input_ids          I32 [B, T]     the batch (B = 2, T = 8)
  loss               F32 [1]
  logits             F32 [B, T, V]  the forward pass, for a sanity check
  grad.<param name>  F32            d loss / d parameter, for EVERY tensor of the
                                    checkpoint's safetensors file(s), under the same name
                                    and with the same shape as stored there (GPT-2 Conv1D
                                    weights [in, out], llama nn.Linear weights [out, in])

  gpt2        tests/fixtures/hf/gpt2: tied head, so grad.transformer.wte.weight is the sum
              of the embedding's and the head's gradients (as torch gives it); there is no
              lm_head.weight in the checkpoint and none here
  llama       tests/fixtures/hf/llama: untied, GQA, llama3 rope scaling
  llama_tied  tests/fixtures/hf/llama_tied: tied (grad.model.embed_tokens.weight holds
              both uses), plain rope, sharded checkpoint

Checks made before writing (the script stops on any failure):

* every dropout module has p = 0 and the model in training mode gives exactly the logits
  it gives in eval mode;
* the parameter names and shapes equal the tensors of the checkpoint file(s);
* the loss equals a float64 numpy cross-entropy of the logits;
* the same model converted to float64 gives gradients within 1e-5 (max abs diff / max abs,
  per tensor) of the float32 ones, and central finite differences of the float64 loss
  agree with the float64 gradient at a few coordinates of every tensor;
* every gradient is finite and no gradient tensor is all zero.

Deterministic: single-threaded torch with deterministic algorithms; two runs write
identical bytes on one machine (another machine may differ in the last bits, which is why
`make crosscheck` compares within 1e-5 of each tensor's largest value). Usage:

  python tools/make_grad_fixtures.py [--hf DIR] [--out DIR]

--hf defaults to tests/fixtures/hf and --out to tests/fixtures/grad, relative to the
repository root.
"""

import argparse
import contextlib
import glob
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T = 2, 8
NAMES = ["gpt2", "llama", "llama_tied"]
# Config keys that hold dropout probabilities in these families; all are forced to 0.
DROPOUT_KEYS = ["resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"]


def check(cond, msg):
    if not cond:
        sys.exit("make_grad_fixtures: " + msg)


def input_ids_for(vocab):
    """Two fixed rows: low, middling and top ids; a token repeated within a row and one
    shared by both rows, so embedding gradients accumulate over several positions."""
    rows = [
        [1, 5, 17, 99, vocab - 1, 42, 5, vocab - 3],
        [vocab - 2, 0, 250 % vocab, 7, 3, vocab // 2, vocab - 1, 7],
    ]
    return np.array(rows, dtype=np.int32)


def checkpoint_tensors(model_dir):
    """{name: shape} of every tensor in the checkpoint's safetensors file(s)."""
    shapes = {}
    for f in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with safe_open(f, framework="numpy") as st:
            for k in st.keys():
                check(k not in shapes, "%s: %s in two shards" % (model_dir, k))
                shapes[k] = tuple(st.get_slice(k).get_shape())
    check(shapes, "%s: no safetensors files" % model_dir)
    return shapes


def load(model_dir, dtype):
    overrides = {}
    cfg = transformers.AutoConfig.from_pretrained(model_dir)
    for k in DROPOUT_KEYS:
        if hasattr(cfg, k):
            overrides[k] = 0.0
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32, **overrides
    )
    for k in DROPOUT_KEYS:
        check(getattr(model.config, k, 0.0) == 0.0, "%s: %s is not 0" % (model_dir, k))
    for mname, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout):
            check(m.p == 0.0, "%s: dropout %s has p = %g" % (model_dir, mname, m.p))
    return model.to(dtype)


def loss_of(logits, ids):
    """Mean cross-entropy of the B * (T - 1) next-token predictions."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1), reduction="mean")


def forward_backward(model, ids):
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, use_cache=False).logits
    loss = loss_of(logits, ids)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


@contextlib.contextmanager
def true_float64():
    """transformers' llama code computes RMSNorm and the attention softmax in float32
    whatever the model's dtype; for the float64 reference (and its finite differences,
    which need the loss to ~1e-12) keep them in float64. Same formulas, more bits."""
    softmax = torch.nn.functional.softmax
    rms_forward = modeling_llama.LlamaRMSNorm.forward

    def softmax64(x, dim=None, _stacklevel=3, dtype=None):
        if x.dtype == torch.float64:
            dtype = None
        return softmax(x, dim=dim, dtype=dtype)

    def rms64(self, x):
        if x.dtype != torch.float64:
            return rms_forward(self, x)
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    torch.nn.functional.softmax = softmax64
    modeling_llama.LlamaRMSNorm.forward = rms64
    try:
        yield
    finally:
        torch.nn.functional.softmax = softmax
        modeling_llama.LlamaRMSNorm.forward = rms_forward


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def np_loss(logits, ids):
    z = logits[:, :-1].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    tgt = ids[:, 1:]
    picked = np.take_along_axis(logp, tgt[..., None].astype(np.int64), -1)[..., 0]
    return float(-picked.mean())


def finite_difference_check(model64, ids, grads64, name, rng):
    """Central differences of the float64 loss at 3 coordinates of every tensor (the
    coordinate with the largest gradient and two random ones)."""
    params = dict(model64.named_parameters())
    model64.train()
    worst = 0.0
    h = 1e-6
    for pname, p in params.items():
        g = grads64[pname].reshape(-1)
        idxs = [int(torch.argmax(g.abs()))] + [int(i) for i in rng.integers(0, g.numel(), 2)]
        scale = float(g.abs().max())
        for i in idxs:
            flat = p.data.view(-1)
            orig = float(flat[i])
            with torch.no_grad():
                flat[i] = orig + h
                lp = float(loss_of(model64(input_ids=ids, use_cache=False).logits, ids))
                flat[i] = orig - h
                lm = float(loss_of(model64(input_ids=ids, use_cache=False).logits, ids))
                flat[i] = orig
            fd = (lp - lm) / (2 * h)
            e = abs(fd - float(g[i])) / max(scale, 1e-12)
            check(e < 1e-6, "%s: finite difference of %s[%d]: %.9g vs grad %.9g" % (name, pname, i, fd, float(g[i])))
            worst = max(worst, e)
    return worst


def make_one(name, model_dir):
    stored = checkpoint_tensors(model_dir)
    model = load(model_dir, torch.float32)
    vocab = model.config.vocab_size
    ids_np = input_ids_for(vocab)
    ids = torch.from_numpy(ids_np.astype(np.int64))

    params = dict(model.named_parameters())
    check(
        sorted(params) == sorted(stored),
        "%s: parameters %s differ from the checkpoint's tensors" % (name, sorted(set(params) ^ set(stored))),
    )
    for n, p in params.items():
        check(tuple(p.shape) == stored[n], "%s: %s is %s, stored %s" % (name, n, tuple(p.shape), stored[n]))

    logits, loss, grads = forward_backward(model, ids)
    model.eval()
    with torch.no_grad():
        ev = model(input_ids=ids, use_cache=False).logits
    check(torch.equal(ev, logits), "%s: training mode changes the logits (dropout left on?)" % name)
    nl = np_loss(logits.numpy(), ids_np)
    check(abs(nl - float(loss)) < 1e-5 * abs(nl), "%s: loss %.9g, numpy %.9g" % (name, float(loss), nl))

    # Float64 reference: same weights, same code, double precision.
    model64 = load(model_dir, torch.float64)
    with true_float64():
        logits64, loss64, grads64 = forward_backward(model64, ids)
        fd = finite_difference_check(model64, ids, grads64, name, np.random.Generator(np.random.PCG64(0)))
    check(rel_err(logits.numpy(), logits64.numpy()) < 1e-5, "%s: float64 logits differ" % name)
    worst, worst_name = 0.0, ""
    for n in sorted(grads):
        g = grads[n].numpy()
        check(np.isfinite(g).all(), "%s: gradient of %s is not finite" % (name, n))
        e = rel_err(g, grads64[n].numpy())
        check(e < 1e-5, "%s: float32 gradient of %s differs from float64 by %.2e" % (name, n, e))
        if e > worst:
            worst, worst_name = e, n
        check(np.abs(g).max() > 1e-6, "%s: gradient of %s is zero" % (name, n))
    print(
        "  %s: loss %.6f (float64 %.9f); float32 vs float64 gradients: worst %.1e (%s); "
        "finite differences: worst %.1e" % (name, float(loss), float(loss64), worst, worst_name, fd)
    )

    out = {
        "input_ids": ids_np,
        "loss": np.array([float(loss)], dtype=np.float32),
        "logits": logits.numpy().astype(np.float32),
    }
    for n, g in grads.items():
        out["grad." + n] = g.numpy().astype(np.float32)
    return out


def write(path, tensors, label):
    # One metadata key only: safetensors keeps metadata in a hash map, so several keys
    # come out in a different order on every run.
    meta = {
        "source": "tools/make_grad_fixtures.py; %s; transformers %s, torch %s"
        % (label, transformers.__version__, torch.__version__.split("+")[0])
    }
    tmp = path + ".tmp.%d" % os.getpid()
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}, tmp, metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", default=os.path.join(REPO, "tests", "fixtures", "hf"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "grad"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)

    for name in NAMES:
        print("== %s" % name)
        tensors = make_one(name, os.path.join(args.hf, name))
        path = os.path.join(args.out, name + ".grad.safetensors")
        write(path, tensors, "tests/fixtures/hf/" + name)
        print("  %s: %d tensors, %d bytes" % (os.path.basename(path), len(tensors), os.path.getsize(path)))


if __name__ == "__main__":
    main()
