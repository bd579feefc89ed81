#!/usr/bin/env python3
"""PyTorch peer of `gradlab bench`: the same fields for torch.optim's single-tensor, foreach
and fused implementations.

    python3 bench/peers/optim_torch.py --params 16000000 --tensors 1 --threads 2

Bytes per parameter follow gradlab's accounting (parameters read and written 2, gradient 1,
each state buffer read and written 2); the roofline is `a.add_(b, alpha=s)` (12 bytes per
f32 element) timed the same way in the same process.
"""
import argparse
import json
import statistics
import time

import torch

OPTIMIZERS = {
    "adam": (lambda p, **k: torch.optim.Adam(p, lr=1e-3, **k), 28, ("fused", "foreach", "single")),
    "adamw": (lambda p, **k: torch.optim.AdamW(p, lr=1e-3, **k), 28, ("fused", "foreach", "single")),
    "sgd(momentum=0.9)": (lambda p, **k: torch.optim.SGD(p, lr=1e-3, momentum=0.9, **k), 20, ("fused", "foreach", "single")),
    "rmsprop": (lambda p, **k: torch.optim.RMSprop(p, lr=1e-2, **k), 20, ("foreach", "single")),
    "adagrad": (lambda p, **k: torch.optim.Adagrad(p, lr=1e-2, **k), 20, ("fused", "foreach", "single")),
    "nadam": (lambda p, **k: torch.optim.NAdam(p, lr=2e-3, **k), 28, ("foreach", "single")),
    "radam": (lambda p, **k: torch.optim.RAdam(p, lr=1e-3, **k), 28, ("foreach", "single")),
}


def median_time(fn, steps):
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        fn()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=16_000_000)
    ap.add_argument("--tensors", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n, t = a.params, a.tensors
    sizes = [n // t + (1 if i < n % t else 0) for i in range(t)]
    x, y = torch.ones(n), torch.full((n,), 1e-3)
    roof = 12 * n / median_time(lambda: x.add_(y, alpha=0.5), a.steps) / 1e9
    for name, (make, bytes_per_param, impls) in OPTIMIZERS.items():
        for impl in impls:
            params = [torch.nn.Parameter(torch.randn(s)) for s in sizes]
            for p in params:
                p.grad = torch.randn(s if False else p.numel()) * 1e-3
            kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
            try:
                opt = make(params, **kwargs)
            except (RuntimeError, TypeError, ValueError) as e:
                print(json.dumps({"optimizer": name, "impl": impl, "error": str(e)}))
                continue
            with torch.no_grad():
                sec = median_time(opt.step, a.steps)
            eff = bytes_per_param * n / sec / 1e9
            print(json.dumps({
                "optimizer": name, "impl": impl, "params": n, "tensors": t, "threads": a.threads,
                "ms_per_step": 1e3 * sec, "params_per_second": n / sec, "effective_gbps": eff,
                "roofline_gbps": roof, "fraction_of_roofline": eff / roof,
            }))


if __name__ == "__main__":
    main()
