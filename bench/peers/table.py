#!/usr/bin/env python3
"""Runs `gradlab bench` and the PyTorch peer (optim_torch.py) one after the other on the
same machine and prints the README's comparison table (markdown).

    cargo build --release -p gradlab-cli
    python3 bench/peers/table.py --gradlab target/release/gradlab --params 16000000
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

# gradlab spec for each of the peer script's optimizer names.
SPECS = {
    "adam": "adam",
    "adamw": "adamw",
    "sgd(momentum=0.9)": "sgd(lr=0.001, momentum=0.9)",
    "rmsprop": "rmsprop",
    "adagrad": "adagrad",
    "nadam": "nadam",
    "radam": "radam",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gradlab", default="target/release/gradlab")
    ap.add_argument("--params", type=int, default=16_000_000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    peer = Path(__file__).with_name("optim_torch.py")
    rows = []
    for tensors in (1, 1000):
        out = subprocess.run(
            [sys.executable, str(peer), "--params", str(a.params), "--tensors", str(tensors),
             "--threads", str(a.threads)],
            capture_output=True, text=True, check=True).stdout
        torch = {}
        for line in out.splitlines():
            r = json.loads(line)
            if "ms_per_step" in r:
                torch[(r["optimizer"], r["impl"])] = r
        for name, spec in SPECS.items():
            g = json.loads(subprocess.run(
                [a.gradlab, "bench", "--optimizer", spec, "--params", str(a.params),
                 "--tensors", str(tensors), "--threads", str(a.threads), "--json"],
                capture_output=True, text=True, check=True).stdout)
            cell = lambda impl: ("%.1f" % torch[(name, impl)]["ms_per_step"]) if (name, impl) in torch else "–"
            rows.append((name, tensors, "%.1f" % g["ms_per_step"], "%.0f%%" % (100 * g["fraction_of_roofline"]),
                         cell("fused"), cell("foreach"), cell("single")))
    print("| optimizer | tensors | gradlab ms | gradlab / roofline | torch fused ms | torch foreach ms | torch single ms |")
    print("|---|---|---|---|---|---|---|")
    for name, tensors, g, frac, fused, foreach, single in sorted(rows, key=lambda r: (list(SPECS).index(r[0]), r[1])):
        print(f"| `{name}` | {tensors} | {g} | {frac} | {fused} | {foreach} | {single} |")


if __name__ == "__main__":
    main()
