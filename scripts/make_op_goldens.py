#!/usr/bin/env python3
"""Writes crates/gradlab-candle/tests/goldens/ops_torch.json: PyTorch's forward, gradients and
Hessian-vector products of the ops gradlab-candle implements, on fixed float64 inputs.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch
    /tmp/torchvenv/bin/python scripts/make_op_goldens.py

Each case gives the op and its arguments, the inputs, an upstream weight R, the output
y = op(inputs), the gradients of L = sum(R * y**2) with respect to every input that takes
one, and the Hessian-vector product of L along a fixed direction V (one tensor per
differentiable input), by double backward. L is quadratic in y so that linear ops have
curvature too. `tests/ops_torch_goldens.rs` recomputes all of it with gradlab's ops.
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

torch.manual_seed(20261202)
OUT = Path(__file__).resolve().parents[1] / "crates/gradlab-candle/tests/goldens/ops_torch.json"


def rand(*shape):
    return torch.rand(*shape, dtype=torch.float64) * 2 - 1


def ties(*shape):
    """Small integers: many exact ties, which decide where a max-pool's gradient goes."""
    return torch.randint(-2, 3, shape).to(torch.float64)


def tensor(t):
    return {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}


def case(name, op, args, inputs, differentiable):
    inputs = {k: v.clone().requires_grad_(k in differentiable) for k, v in inputs.items()}
    y = op(**inputs)
    r = rand(*y.shape) if y.dim() > 0 else torch.tensor(1.0, dtype=torch.float64)
    loss = (r * y ** 2).sum()
    wrt = [inputs[k] for k in differentiable]
    grads = torch.autograd.grad(loss, wrt, create_graph=True)
    v = [rand(*w.shape) for w in wrt]
    dot = sum((g * d).sum() for g, d in zip(grads, v))
    hvp = torch.autograd.grad(dot, wrt, allow_unused=True)
    hvp = [torch.zeros_like(w) if h is None else h for w, h in zip(wrt, hvp)]
    return {
        "name": name,
        "op": op.__name__,
        "args": args,
        "order": list(inputs),
        "inputs": {k: tensor(t) for k, t in inputs.items()},
        "differentiable": differentiable,
        "upstream": tensor(r),
        "output": tensor(y),
        "grads": {k: tensor(g) for k, g in zip(differentiable, grads)},
        "direction": {k: tensor(d) for k, d in zip(differentiable, v)},
        "hvp": {k: tensor(h) for k, h in zip(differentiable, hvp)},
    }


def cases():
    out = []
    for name, (n, cin, h, w, cout, k), params in [
        ("conv2d padded", (2, 1, 7, 7, 3, 3), dict(padding=1, stride=1, dilation=1, groups=1)),
        ("conv2d strided", (2, 2, 8, 7, 3, 3), dict(padding=0, stride=2, dilation=1, groups=1)),
        ("conv2d dilated", (1, 2, 9, 9, 2, 3), dict(padding=2, stride=1, dilation=2, groups=1)),
        ("conv2d grouped", (2, 4, 6, 6, 6, 3), dict(padding=1, stride=1, dilation=1, groups=2)),
        ("conv2d pointwise", (2, 3, 5, 4, 4, 1), dict(padding=0, stride=1, dilation=1, groups=1)),
    ]:
        def conv2d(x, weight, bias, p=params):
            return F.conv2d(x, weight, bias, **p)
        out.append(case(name, conv2d, params, {
            "x": rand(n, cin, h, w), "weight": rand(cout, cin // params["groups"], k, k),
            "bias": rand(cout)}, ["x", "weight", "bias"]))

    def max_pool2d(x, k=2, s=2):
        return F.max_pool2d(x, k, s)
    out.append(case("max_pool2d with ties", max_pool2d, {"kernel": 2, "stride": 2},
                    {"x": ties(2, 2, 6, 6)}, ["x"]))
    out.append(case("max_pool2d random", max_pool2d, {"kernel": 2, "stride": 2},
                    {"x": rand(2, 3, 8, 6)}, ["x"]))

    def max_pool2d_overlapping(x):
        return F.max_pool2d(x, 3, 2)
    max_pool2d_overlapping.__name__ = "max_pool2d"
    out.append(case("max_pool2d overlapping", max_pool2d_overlapping, {"kernel": 3, "stride": 2},
                    {"x": ties(1, 2, 7, 7)}, ["x"]))

    def avg_pool2d(x):
        return F.avg_pool2d(x, 2, 2)
    out.append(case("avg_pool2d", avg_pool2d, {"kernel": 2, "stride": 2}, {"x": rand(2, 3, 6, 4)}, ["x"]))

    def linear(x, weight, bias):
        return F.linear(x, weight, bias)
    out.append(case("linear", linear, {}, {"x": rand(5, 7), "weight": rand(4, 7), "bias": rand(4)},
                    ["x", "weight", "bias"]))

    def relu(x):
        return F.relu(x)
    x = rand(3, 8)
    x[0, :3] = 0.0  # PyTorch's gradient at 0 is 0
    out.append(case("relu", relu, {}, {"x": x}, ["x"]))

    def gelu_erf(x):
        return F.gelu(x, approximate="none")
    out.append(case("gelu_erf", gelu_erf, {}, {"x": 3 * rand(4, 6)}, ["x"]))

    def batch_norm_train(x, gamma, beta):
        return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    out.append(case("batch_norm_train 4-D", batch_norm_train, {"eps": 1e-5},
                    {"x": rand(4, 3, 3, 2), "gamma": rand(3), "beta": rand(3)}, ["x", "gamma", "beta"]))
    out.append(case("batch_norm_train 2-D", batch_norm_train, {"eps": 1e-5},
                    {"x": rand(6, 5), "gamma": rand(5), "beta": rand(5)}, ["x", "gamma", "beta"]))

    labels = torch.tensor([3, 0, 4, 4, 1, 2])

    def cross_entropy(logits, labels=labels):
        return F.cross_entropy(logits, labels)
    c = case("cross_entropy", cross_entropy, {"labels": labels.tolist()}, {"logits": 3 * rand(6, 5)}, ["logits"])
    out.append(c)
    return out


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {"generator": "scripts/make_op_goldens.py", "torch": torch.__version__,
           "dtype": "float64", "loss": "sum(upstream * output**2)", "cases": cases()}
    OUT.write_text(json.dumps(doc) + "\n")
    print(f"{OUT}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
