#!/usr/bin/env python3
"""Writes crates/gradlab/tests/golden/modern_options.json: reference trajectories of the
optimizers after the lecture with hyperparameters other than those of the shared
modern.json (weight decay of both kinds, fixed decay, no clipping, warm-up of AdEMAMix's
slow momentum, other etas and step-size bounds, early averaging, SAM/ASAM around other
bases, Muon with other momentum, coefficients and lr adjustments, schedule-free with warm-up, decay and other averaging weights, L-BFGS with a short memory, an evaluation budget and loose tolerances), in float64, from the
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
import schedulefree as sf

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


def trajectory(function, start, make, steps, kind="plain"):
    """kind: plain (one gradient, opt.step()), sam (first_step / second_step with the
    gradients at w and w + e), closure (opt.step(closure): L-BFGS), schedulefree (rows are
    the evaluation point x: eval() before each row, train() after it)."""
    if kind == "muon":  # the point as a 2x1 matrix (a column), as modern.json has it
        p = torch.tensor([[start[0]], [start[1]]], requires_grad=True)
        coords = lambda: (p[0, 0], p[1, 0])
    else:
        p = torch.tensor(start, requires_grad=True)
        coords = lambda: (p[0], p[1])
    opt = make([p])
    rows = []

    def loss():
        return surface(function, *coords())

    def row():
        with torch.no_grad():
            x, y = coords()
            rows.append([x.item(), y.item(), loss().item()])

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    if kind == "schedulefree":
        opt.train()
    row()
    for _ in range(steps):
        if kind == "sam":
            closure()
            opt.first_step(zero_grad=True)
            loss().backward()
            opt.second_step(zero_grad=True)
        elif kind == "closure":
            opt.step(closure)
        else:
            closure()
            opt.step()
        if kind == "schedulefree":
            opt.eval()
            row()
            opt.train()
        else:
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
    ("booth", [-4.0, 3.0], "sam(adamw(lr=0.05, weight_decay=0.1), rho=0.1)",
     lambda ps: po.SAM(ps, torch.optim.AdamW, rho=0.1, lr=0.05, weight_decay=0.1), 150, "sam"),
    ("booth", [-4.0, 3.0], "sam(sgd(lr=0.005, momentum=0.9, nesterov=true, weight_decay=0.01), rho=0.2, adaptive=true)",
     lambda ps: po.SAM(ps, torch.optim.SGD, rho=0.2, adaptive=True, lr=0.005, momentum=0.9,
                       nesterov=True, weight_decay=0.01), 150, "sam"),
    ("bowl", [-8.0, 1.0], "sam(rmsprop(lr=0.01, momentum=0.5))",
     lambda ps: po.SAM(ps, torch.optim.RMSprop, lr=0.01, momentum=0.5), 100, "sam"),
    ("rosenbrock", [-1.5, 2.0], "sgd_schedulefree(lr=0.0005, momentum=0.8, weight_decay=0.01, warmup_steps=20)",
     lambda ps: sf.SGDScheduleFree(ps, lr=0.0005, momentum=0.8, weight_decay=0.01, warmup_steps=20), 150, "schedulefree"),
    ("himmelblau", [0.5, -0.5], "sgd_schedulefree(lr=0.01, r=1, weight_lr_power=1)",
     lambda ps: sf.SGDScheduleFree(ps, lr=0.01, r=1.0, weight_lr_power=1.0), 150, "schedulefree"),
    ("booth", [-4.0, 3.0], "adamw_schedulefree(lr=0.1, betas=(0.95, 0.99), eps=1e-6, weight_decay=0.05)",
     lambda ps: sf.AdamWScheduleFree(ps, lr=0.1, betas=(0.95, 0.99), eps=1e-6, weight_decay=0.05), 150, "schedulefree"),
    ("beale", [1.0, 1.4], "adamw_schedulefree(lr=0.02, warmup_steps=30, r=0.5)",
     lambda ps: sf.AdamWScheduleFree(ps, lr=0.02, warmup_steps=30, r=0.5), 150, "schedulefree"),
    ("rosenbrock", [-1.5, 2.0], "muon(lr=0.01, momentum=0.9, nesterov=false, weight_decay=0.01)",
     lambda ps: torch.optim.Muon(ps, lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.01), 150, "muon"),
    ("booth", [-4.0, 3.0], "muon(lr=0.05, adjust_lr_fn=match_rms_adamw, ns_steps=3, weight_decay=0)",
     lambda ps: torch.optim.Muon(ps, lr=0.05, adjust_lr_fn="match_rms_adamw", ns_steps=3, weight_decay=0.0), 150, "muon"),
    ("himmelblau", [0.5, -0.5], "muon(lr=0.02, ns_coefficients=(2, -1.5, 0.5), eps=1e-3, adjust_lr_fn=spectral_unclamped)",
     lambda ps: torch.optim.Muon(ps, lr=0.02, ns_coefficients=(2.0, -1.5, 0.5), eps=1e-3,
                                 adjust_lr_fn="spectral_unclamped"), 150, "muon"),
    ("rosenbrock", [-1.5, 2.0], "lbfgs(lr=0.2, max_iter=7, history_size=3)",
     lambda ps: torch.optim.LBFGS(ps, lr=0.2, max_iter=7, history_size=3), 10, "closure"),
    ("himmelblau", [0.5, -0.5], "lbfgs(lr=1, max_iter=4, max_eval=9, history_size=2, line_search_fn=strong_wolfe)",
     lambda ps: torch.optim.LBFGS(ps, lr=1, max_iter=4, max_eval=9, history_size=2,
                                  line_search_fn="strong_wolfe"), 12, "closure"),
    ("booth", [-4.0, 3.0], "lbfgs(tolerance_grad=1e-3, tolerance_change=1e-4, line_search_fn=strong_wolfe)",
     lambda ps: torch.optim.LBFGS(ps, tolerance_grad=1e-3, tolerance_change=1e-4,
                                  line_search_fn="strong_wolfe"), 5, "closure"),
]


def main():
    cases = []
    for function, start, spec, make, steps, *kind in CASES:
        cases.append({
            "function": function,
            "start": start,
            "optimizer": spec,
            "schedule": None,
            "steps": steps,
            "trajectory": trajectory(function, start, make, steps, *kind),
        })
    meta = {"torch": torch.__version__, "pytorch_optimizer": "4.1.0", "schedulefree": "1.4.1"}
    OUT.write_text(json.dumps({"generator": meta, "cases": cases}, indent=1) + "\n")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
