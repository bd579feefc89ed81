#!/usr/bin/env python3
"""Writes crates/gradlab/tests/golden/modern_options.json: reference trajectories of the
optimizers after the lecture with hyperparameters other than those of the shared
modern.json (weight decay of both kinds, fixed decay, no clipping, warm-up of AdEMAMix's
slow momentum, other etas and step-size bounds, early averaging), in float64, from the
reference implementations themselves.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch \\
        pytorch-optimizer==4.1.0
    /tmp/torchvenv/bin/python scripts/make_modern_goldens.py

Same format as modern.json (rows [x, y, loss] after k steps, row 0 the start); the point is
one tensor of shape [2], its gradient from autograd on the surface.
"""
import json
import math
from pathlib import Path

import torch
import pytorch_optimizer as po

torch.set_default_dtype(torch.float64)
OUT = Path(__file__).resolve().parents[1] / "crates/gradlab/tests/golden/modern_options.json"


def surface(name, x, y):
    if name == "rosenbrock":
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2
    if name == "beale":
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2
    if name == "himmelblau":
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2
    if name == "booth":
        return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2
    if name == "bowl":
        return 0.05 * x * x + 5 * y * y
    if name == "rastrigin":
        return 20 + x * x - 10 * torch.cos(2 * math.pi * x) + y * y - 10 * torch.cos(2 * math.pi * y)
    raise ValueError(name)


def trajectory(function, start, make, steps):
    p = torch.tensor(start, requires_grad=True)
    opt = make([p])
    rows = []

    def row():
        with torch.no_grad():
            rows.append([p[0].item(), p[1].item(), surface(function, p[0], p[1]).item()])

    row()
    for _ in range(steps):
        opt.zero_grad()
        surface(function, p[0], p[1]).backward()
        opt.step()
        row()
    return rows


# (function, start, spec as gradlab writes it, constructor, steps)
CASES = [
    ("booth", [-4.0, 3.0], "adopt(lr=0.02, weight_decay=0.05)",
     lambda ps: po.ADOPT(ps, lr=0.02, weight_decay=0.05), 150),
    ("rosenbrock", [-1.5, 2.0], "adopt(lr=0.01, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1, weight_decouple=true)",
     lambda ps: po.ADOPT(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1, weight_decouple=True), 150),
    ("himmelblau", [0.5, -0.5], "adopt(lr=0.05, weight_decay=0.01, weight_decouple=true, fixed_decay=true, clip=false)",
     lambda ps: po.ADOPT(ps, lr=0.05, weight_decay=0.01, weight_decouple=True, fixed_decay=True, clip_lambda=None), 150),
    ("himmelblau", [0.0, 0.0], "ademamix(lr=0.02, betas=(0.8, 0.99, 0.999), alpha=2, t_alpha_beta3=50)",
     lambda ps: po.AdEMAMix(ps, lr=0.02, betas=(0.8, 0.99, 0.999), alpha=2.0, t_alpha_beta3=50), 150),
    ("booth", [-4.0, 3.0], "ademamix(lr=0.01, weight_decay=0.02, weight_decouple=true)",
     lambda ps: po.AdEMAMix(ps, lr=0.01, weight_decay=0.02, weight_decouple=True), 150),
    ("bowl", [-8.0, 1.0], "ademamix(lr=0.05, alpha=8, weight_decay=0.01)",
     lambda ps: po.AdEMAMix(ps, lr=0.05, alpha=8.0, weight_decay=0.01), 150),
    ("rosenbrock", [-1.5, 2.0], "rprop(lr=0.05, etas=(0.3, 1.5), step_sizes=(0.001, 0.2))",
     lambda ps: torch.optim.Rprop(ps, lr=0.05, etas=(0.3, 1.5), step_sizes=(0.001, 0.2)), 150),
    ("rastrigin", [2.2, -1.7], "rprop(lr=0.1)",
     lambda ps: torch.optim.Rprop(ps, lr=0.1), 100),
    ("beale", [1.0, 1.4], "asgd(lr=0.01, lambd=0.01, alpha=0.5, t0=10, weight_decay=0.05)",
     lambda ps: torch.optim.ASGD(ps, lr=0.01, lambd=0.01, alpha=0.5, t0=10, weight_decay=0.05), 150),
    ("bowl", [-8.0, 1.0], "asgd(lr=0.15, t0=0)",
     lambda ps: torch.optim.ASGD(ps, lr=0.15, t0=0), 100),
]


def main():
    cases = []
    for function, start, spec, make, steps in CASES:
        cases.append({
            "function": function,
            "start": start,
            "optimizer": spec,
            "schedule": None,
            "steps": steps,
            "trajectory": trajectory(function, start, make, steps),
        })
    meta = {"torch": torch.__version__, "pytorch_optimizer": "4.1.0"}
    OUT.write_text(json.dumps({"generator": meta, "cases": cases}, indent=1) + "\n")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
