#!/usr/bin/env python3
"""PyTorch peer of `gradlab train`: the same data split, models, optimizer and batch size.

    python3 bench/peers/mnist_torch.py --model mlp   # 784-256-128-10 ReLU, AdamW(lr=1e-3)
    python3 bench/peers/mnist_torch.py --model cnn   # LeNet-5-like

Prints per-epoch wall time, train loss and test accuracy, as `gradlab train` does, so both
can be run on the same machine and compared.
"""
import argparse
import gzip
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
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    (xtr, ytr), (xte, yte) = load()
    net = model(a.model)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
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


if __name__ == "__main__":
    main()
