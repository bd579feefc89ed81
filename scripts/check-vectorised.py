#!/usr/bin/env python3
"""Checks the generated code of every optimizer's update kernel: builds gradlab with v0
symbol mangling (so generic instances keep their names), disassembles the AVX-512 and AVX2
instances of each rule's update pass, and counts packed vector instructions (zmm/ymm)
against scalar floating-point ones. Fails when a kernel has no packed arithmetic.

    python3 scripts/check-vectorised.py            # builds into target/vcheck (a few minutes)
    python3 scripts/check-vectorised.py --no-build # reuses that build
"""
import argparse
import collections
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", "vcheck")
HEADER = re.compile(r"^[0-9a-f]+ <(.*)>:$")
# simd::avx512::<_, Engine<f32, gradlab::optim::adam::Adam>>::pass<false, true>::{closure..}>
INSTANCE = re.compile(
    r"gradlab::optim::simd::(avx512|avx2)::<.*Engine<(f32|f64), gradlab::optim::\w+::(\w+)>>::pass<(true|false), (true|false)>"
)
ARITH = re.compile(r"^v?(add|sub|mul|div|sqrt|max|min|fmadd\w*)(ps|pd|ss|sd)$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        env = dict(os.environ, RUSTFLAGS="-C symbol-mangling-version=v0")
        subprocess.run(["cargo", "build", "--release", "-p", "gradlab-cli", "--target-dir", TARGET],
                       cwd=ROOT, env=env, check=True)
    dump = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn",
                           os.path.join(TARGET, "release", "gradlab")],
                          capture_output=True, text=True, check=True).stdout
    counts = collections.defaultdict(collections.Counter)
    current = None
    for line in dump.splitlines():
        m = HEADER.match(line)
        if m:
            inst = INSTANCE.search(m.group(1))
            current = None
            if inst:
                isa, dtype, rule, pre, _check = inst.groups()
                current = (rule, dtype, isa, "pre-pass" if pre == "true" else "update")
            continue
        if current is None or "\t" not in line:
            continue
        parts = line.split("\t")[-1].split(None, 1)
        if not parts:
            continue
        op, args = parts[0], parts[1] if len(parts) > 1 else ""
        if not ARITH.match(op):
            continue
        if op.endswith(("ss", "sd")):
            counts[current]["scalar"] += 1
        elif "zmm" in args:
            counts[current]["zmm"] += 1
        elif "ymm" in args:
            counts[current]["ymm"] += 1
        else:
            counts[current]["xmm"] += 1
    failed = False
    print(f"{'rule':<10} {'type':<4} {'isa':<7} {'pass':<9} {'zmm':>5} {'ymm':>5} {'xmm':>5} {'scalar':>7}")
    for key in sorted(counts):
        c = counts[key]
        wide = c["zmm"] if key[2] == "avx512" else c["ymm"]
        print(f"{key[0]:<10} {key[1]:<4} {key[2]:<7} {key[3]:<9} {c['zmm']:>5} {c['ymm']:>5} {c['xmm']:>5} {c['scalar']:>7}")
        if wide == 0:
            failed = True
            print(f"  ^ no packed {key[2]} arithmetic", file=sys.stderr)
    if not counts:
        print("no kernel instances found", file=sys.stderr)
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
