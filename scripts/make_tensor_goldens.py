#!/usr/bin/env python3
"""Writes crates/gradlab/tests/golden/tensors.json: reference trajectories of the optimizers
whose step depends on tensor shapes or on sums over every tensor (Adafactor's factored second
moment of matrices and of ≥3-D tensors; Prodigy's one estimate d for all tensors, with
parameter groups), in float64, from the reference implementations themselves.

    /opt/torchvenv/bin/python scripts/make_tensor_goldens.py   (torch 2.15, prodigyopt 1.1.2)

Each case has tensors (name, shape, start θ0, and per element a, b), the gradient
g = a·θ + b + 0.1·θ·θ·θ (element-wise, so both sides compute it the same), the optimizer spec
as gradlab writes it, parameter groups (name patterns, overrides) and the flat parameters
(layout order) after each step.
"""
import json
import math
from pathlib import Path

import torch
from prodigyopt import Prodigy

torch.set_default_dtype(torch.float64)
OUT = Path(__file__).resolve().parents[1] / "crates/gradlab/tests/golden/tensors.json"

SHAPES = [("w", [3, 4]), ("conv", [2, 3, 2, 5]), ("bias", [5]), ("scale", [1])]


def tensors(seed):
    out = []
    for k, (name, shape) in enumerate(SHAPES):
        n = math.prod(shape)
        theta = [math.sin(seed + 1.0 + 0.7 * i + k) * (1 + i % 3) for i in range(n)]
        a = [0.5 + ((i * 37 + k * 11) % 13) / 4.0 for i in range(n)]
        b = [0.3 * math.cos(1.3 * i + k + seed) * (1 + (i % 4) ** 2) for i in range(n)]
        out.append({"name": name, "shape": shape, "theta": theta, "a": a, "b": b})
    return out


def trajectory(ts, make, groups, steps):
    params = [torch.tensor(t["theta"]).reshape(t["shape"]).requires_grad_() for t in ts]
    named = {t["name"]: p for t, p in zip(ts, params)}
    grouped = set()
    param_groups = []
    for patterns, overrides in groups:
        members = [named[n] for n in named if any(n.startswith(p.rstrip("*")) for p in patterns)]
        grouped.update(id(m) for m in members)
        param_groups.append({"params": members, **overrides})
    base = [p for p in params if id(p) not in grouped]
    opt = make([{"params": base}] + param_groups)
    rows = []
    coef = [(torch.tensor(t["a"]).reshape(t["shape"]), torch.tensor(t["b"]).reshape(t["shape"])) for t in ts]
    for _ in range(steps):
        for p, (a, b) in zip(params, coef):
            with torch.no_grad():
                p.grad = a * p + b + 0.1 * (p * p * p)
        opt.step()
        rows.append([x for p in params for x in p.detach().flatten().tolist()])
    return rows


# (spec as gradlab writes it, constructor, groups as (patterns, torch overrides), gradlab
#  group overrides, steps)
CASES = [
    ("adafactor(lr=0.01)", lambda g: torch.optim.Adafactor(g, lr=0.01), [], None, 40),
    ("adafactor(lr=0.05, beta2_decay=-0.5, eps=(1e-6, 0.01), d=2, weight_decay=0.1)",
     lambda g: torch.optim.Adafactor(g, lr=0.05, beta2_decay=-0.5, eps=(1e-6, 0.01), d=2.0, weight_decay=0.1),
     [], None, 40),
    ("adafactor(lr=0.2, weight_decay=0.05)",
     lambda g: torch.optim.Adafactor(g, lr=0.2, weight_decay=0.05),
     [(["bias", "scale"], {"weight_decay": 0.0, "lr": 0.02})], "weight_decay=0, lr=0.02", 40),
    ("prodigy(lr=1)", lambda g: Prodigy(g, lr=1.0), [], None, 40),
    ("prodigy(lr=1, betas=(0.9, 0.99), weight_decay=0.01, decouple=false)",
     lambda g: Prodigy(g, lr=1.0, betas=(0.9, 0.99), weight_decay=0.01, decouple=False), [], None, 40),
    ("prodigy(lr=0.5, use_bias_correction=true, safeguard_warmup=true, d_coef=2, growth_rate=1.3, d0=1e-4, weight_decay=0.1)",
     lambda g: Prodigy(g, lr=0.5, use_bias_correction=True, safeguard_warmup=True, d_coef=2.0,
                       growth_rate=1.3, d0=1e-4, weight_decay=0.1), [], None, 40),
    ("prodigy(lr=1, betas=(0, 0.999), beta3=0.9, eps=1e-6, weight_decay=0.02)",
     lambda g: Prodigy(g, lr=1.0, betas=(0.0, 0.999), beta3=0.9, eps=1e-6, weight_decay=0.02), [], None, 40),
    ("prodigy(lr=1, weight_decay=0.05)",
     lambda g: Prodigy(g, lr=1.0, weight_decay=0.05),
     [(["bias"], {"weight_decay": 0.0, "eps": 1e-4}), (["scale"], {"lr": 0.0})],
     ["weight_decay=0, eps=1e-4", "lr=0"], 40),
]


def main():
    cases = []
    for seed, (spec, make, groups, overrides, steps) in enumerate(CASES):
        ts = tensors(seed)
        if isinstance(overrides, str):
            overrides = [overrides]
        cases.append({
            "optimizer": spec,
            "tensors": ts,
            "groups": [{"params": p, "overrides": o} for (p, _), o in zip(groups, overrides or [])],
            "steps": steps,
            "trajectory": trajectory(ts, make, groups, steps),
        })
    meta = {"torch": torch.__version__, "prodigyopt": "1.1.2"}
    OUT.write_text(json.dumps({"generator": meta, "cases": cases}) + "\n")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
