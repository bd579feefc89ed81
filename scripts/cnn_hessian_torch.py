#!/usr/bin/env python3
"""An independent PyTorch float64 rebuild of `gradlab hessian` for the built-in CNN.

    gradlab train --model cnn --epochs 1 --out runs/cnn
    gradlab hessian --checkpoint runs/cnn --top 5 --bottom 5 --json > runs/cnn/hessian.json
    python3 scripts/cnn_hessian_torch.py --checkpoint runs/cnn --report runs/cnn/hessian.json

Loads the checkpoint's weights (model.safetensors) into the same LeNet-like network in
float64 (conv 5×5 pad 2 → ReLU → max-pool 2 → conv 5×5 → ReLU → max-pool 2 → 120 → 84 →
10), takes the same examples as `gradlab hessian` (the first batches×batch_size training
digits, normalised in float32 as gradlab does), and computes the loss, the gradient norm
and the extreme Hessian eigenvalues by Lanczos (full reorthogonalisation) on PyTorch's
double-backward Hessian-vector products. With --report it prints the relative difference
of each figure from gradlab's and exits 1 when any exceeds --tol (default 1e-5).
Needs torch and safetensors (both from PyPI).
"""
import argparse
import gzip
import json
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def read_idx(path):
    raw = gzip.open(path, "rb").read()
    if struct.unpack(">I", raw[:4])[0] == 2051:
        n, r, c = struct.unpack(">III", raw[4:16])
        return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(n, r, c)
    return torch.frombuffer(bytearray(raw[8:]), dtype=torch.uint8).long()


def examples(n):
    x = read_idx(ROOT / "data/images-idx3-ubyte.gz")[:n].to(torch.float32)
    x = (x / 255.0 - torch.tensor(0.1307, dtype=torch.float32)) / torch.tensor(0.3081, dtype=torch.float32)
    y = read_idx(ROOT / "data/labels-idx1-ubyte.gz")[:n]
    return x.to(torch.float64).unsqueeze(1), y


NAMES = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
         "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]


def loss_fn(p, x, y):
    h = F.max_pool2d(F.relu(F.conv2d(x, p[0], p[1], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p[2], p[3])), 2).flatten(1)
    h = F.relu(F.linear(h, p[4], p[5]))
    h = F.relu(F.linear(h, p[6], p[7]))
    return F.cross_entropy(F.linear(h, p[8], p[9]), y)


def lanczos(hvp, n, k, iters, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, dtype=torch.float64, generator=g)
    q /= q.norm()
    basis, alpha, beta = [q], [], []
    for it in range(iters):
        w = hvp(basis[-1])
        a = torch.dot(w, basis[-1]).item()
        alpha.append(a)
        Q = torch.stack(basis)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        b = w.norm().item()
        t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
        for i, bi in enumerate(beta):
            t[i, i + 1] = t[i + 1, i] = bi
        theta, s = torch.linalg.eigh(t)
        res = (b * s[-1, :].abs()).tolist()
        scale = theta.abs().max().item()
        wanted = list(range(min(k, len(alpha)))) + list(range(len(alpha) - min(k, len(alpha)), len(alpha)))
        if len(alpha) >= 2 * k and all(res[i] <= 1e-10 * max(abs(theta[i].item()), 1e-6 * scale) for i in wanted):
            break
        beta.append(b)
        basis.append(w / b)
    return theta.tolist(), it + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--report", help="gradlab hessian --json output to compare with")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    folder = Path(a.checkpoint)
    path = folder / "checkpoint/model.safetensors"
    if not path.exists():
        path = folder / "model.safetensors"
    weights = load_file(str(path))
    params = [weights[k].to(torch.float64).requires_grad_(True) for k in NAMES]
    x, y = examples(a.batches * a.batch_size)
    loss = loss_fn(params, x, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    n = flat_grad.numel()

    def hvp(v):
        out = torch.autograd.grad(flat_grad, params, grad_outputs=v, retain_graph=True)
        return torch.cat([o.reshape(-1) for o in out]).detach()

    theta, iters = lanczos(hvp, n, a.top, a.iters)
    ours = {"loss": loss.item(), "gradient_norm": flat_grad.norm().item(),
            "top_eigenvalues": theta[::-1][:a.top], "bottom_eigenvalues": theta[:a.top],
            "lanczos_iterations": iters, "parameters": n, "examples": len(y)}
    if not a.report:
        print(json.dumps(ours, indent=2))
        return
    report = json.loads(Path(a.report).read_text())
    worst = 0.0
    for key in ["loss", "gradient_norm"]:
        d = abs(report[key] - ours[key]) / abs(ours[key])
        worst = max(worst, d)
        print(f"{key:<18} gradlab {report[key]:.12g}  PyTorch {ours[key]:.12g}  rel. diff {d:.1e}")
    for key in ["top_eigenvalues", "bottom_eigenvalues"]:
        for i, (g, t) in enumerate(zip(report[key], ours[key])):
            d = abs(g - t) / abs(t)
            worst = max(worst, d)
            print(f"{key[:-1]} {i + 1:<3} gradlab {g:.12g}  PyTorch {t:.12g}  rel. diff {d:.1e}")
    print(f"largest relative difference {worst:.1e} (tolerance {a.tol:.0e}); PyTorch Lanczos: {iters} products")
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
