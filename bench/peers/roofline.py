#!/usr/bin/env python3
"""Compares `gradlab bench`'s in-process roofline with a C/OpenMP read-modify-write kernel
(bench/peers/rmw.c, gcc -O3 -march=native) on the same machine: the two run interleaved,
ROUNDS times each, and the medians are printed. gradlab's roofline should not read lower
than the C kernel's (it is the fastest of several variants of the same loop).

    cargo build --release -p gradlab-cli
    python3 bench/peers/roofline.py --gradlab target/release/gradlab --threads 2
"""
import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gradlab", default=str(ROOT / "target/release/gradlab"))
    ap.add_argument("--params", type=int, default=16_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    exe = ROOT / "target" / "rmw"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", str(ROOT / "bench/peers/rmw.c"),
                    "-o", str(exe)], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    c_runs, g_runs, fractions = [], [], []
    for _ in range(a.rounds):
        out = subprocess.run([a.gradlab, "bench", "--json", "--optimizer", "adam", "--params",
                              str(a.params), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        g_runs.append(r["roofline_gbps"])
        # The same loop over arrays of the same size as gradlab's roofline.
        out = subprocess.run([str(exe), str(r["roofline_elements"]), "20"], env=env,
                             capture_output=True, text=True, check=True).stdout
        c_runs.append(json.loads(out)["gbps"])
        fractions.append(r["effective_gbps"] / r["roofline_gbps"])
    c, g = statistics.median(c_runs), statistics.median(g_runs)
    print(f"C/OpenMP a[i] += s*b[i]: {c:.1f} GB/s (runs {', '.join(f'{x:.1f}' for x in c_runs)})")
    print(f"gradlab bench roofline: {g:.1f} GB/s (runs {', '.join(f'{x:.1f}' for x in g_runs)})")
    print(f"ratio gradlab/C: {g / c:.3f}; Adam's fraction: of gradlab's roofline "
          f"{statistics.median(fractions):.0%}")


if __name__ == "__main__":
    main()
