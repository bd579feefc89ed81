#!/usr/bin/env python3
"""PyTorch peer of `gradlab train`: the same data split, models, optimizer and batch size.

    python3 bench/peers/mnist_torch.py --model mlp   # 784-256-128-10 ReLU, AdamW(lr=1e-3)
    python3 bench/peers/mnist_torch.py --model cnn   # LeNet-5-like

Prints per-epoch wall time, train loss and test accuracy, as `gradlab train` does, so both
can be run on the same machine and compared. With `--split` it times one epoch phase by
phase (data, forward, backward, optimizer; ms per step) and one evaluation, as
`gradlab bench --train` does, and prints JSON with the same keys.
"""
import argparse
import gzip
import json
import statistics
import struct
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def read_idx(path):
    raw = gzip.open(path, "rb").read() if str(path).endswith(".gz") else open(path, "rb").read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic == 2051:
        n, r, c = struct.unpack(">III", raw[4:16])
        return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(n, r, c)
    if magic == 2049:
        return torch.frombuffer(bytearray(raw[8:]), dtype=torch.uint8).long()
    raise ValueError(f"{path}: wrong magic {magic}")


def load():
    x = read_idx(ROOT / "data/images-idx3-ubyte.gz").float() / 255.0
    x = (x - 0.1307) / 0.3081
    y = read_idx(ROOT / "data/labels-idx1-ubyte.gz")
    cut = len(y) * 4 // 5
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def model(kind):
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(
        nn.Unflatten(1, (1, 28)), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--split", action="store_true", help="time one epoch phase by phase")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    (xtr, ytr), (xte, yte) = load()
    net = model(a.model)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    if a.split:
        return split(a, net, opt, loss_fn, xtr, ytr, xte, yte)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(ytr))
        total = 0.0
        for i in range(0, len(ytr), a.batch_size):
            idx = perm[i:i + a.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            acc = (net(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: {time.perf_counter() - t0:.2f} s, train loss {total / len(ytr):.4f}, test accuracy {100 * acc:.2f}%")
    print(f"total {time.perf_counter() - start:.2f} s")


def split(a, net, opt, loss_fn, xtr, ytr, xte, yte):
    """One epoch, each step's phases timed; then one evaluation."""
    phases = {"data": [], "forward": [], "backward": [], "optimizer": []}
    net.train()
    perm = torch.randperm(len(ytr))
    losses = []
    start = time.perf_counter()
    for i in range(0, len(ytr), a.batch_size):
        t0 = time.perf_counter()
        idx = perm[i:i + a.batch_size]
        x, y = xtr[idx], ytr[idx]
        t1 = time.perf_counter()
        opt.zero_grad()
        logits = net(x)
        loss = loss_fn(logits, y)
        losses.append(loss.item())
        (logits.argmax(1) == y).sum().item()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phases[k].append(1e3 * v)
    train_ms = 1e3 * (time.perf_counter() - start)
    t0 = time.perf_counter()
    net.eval()
    with torch.no_grad():
        (net(xte).argmax(1) == yte).float().mean().item()
    eval_ms = 1e3 * (time.perf_counter() - t0)

    def summary(reduce):
        out = {k: reduce(v) for k, v in phases.items()}
        out["total"] = sum(out.values())
        return out

    print(json.dumps({
        "model": a.model, "optimizer": f"torch.optim.AdamW(lr={a.lr})", "batch_size": a.batch_size,
        "threads": a.threads, "steps": len(losses), "mean_ms": summary(statistics.fmean),
        "median_ms": summary(statistics.median), "train_ms": train_ms, "eval_ms": eval_ms,
        "test_examples": len(yte), "train_loss": statistics.fmean(losses),
    }, indent=2))


if __name__ == "__main__":
    main()
