#!/usr/bin/env python3
"""gradlab train vs the PyTorch peer, interleaved on the same machine.

    python3 bench/peers/compare_training.py --model cnn --epochs 2 --runs 3

Runs `gradlab train` and `mnist_torch.py` alternately (gradlab, PyTorch, gradlab, ...),
`--runs` times each, with the same model, split, batch size, optimizer (AdamW, lr 1e-3) and
thread count, and prints the median training time of each (the epochs including their
evaluations; gradlab's also includes its metrics and checkpoint writes; neither includes
process start-up or PyTorch's import), the ratio, and each run's test accuracy. Needs a
release build (`cargo build --release -p gradlab-cli`) and a Python with torch; `--python`
names it (default: the one running this script).
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def gradlab_run(a, out):
    cmd = [str(ROOT / "target/release/gradlab"), "--threads", str(a.threads), "train",
           "--model", a.model, "--optimizer", "adamw(lr=0.001)", "--epochs", str(a.epochs),
           "--batch-size", str(a.batch_size), "--out", out]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads((Path(out) / "summary.json").read_text())
    return summary["wall_seconds"], summary["test_accuracy"]


def torch_run(a):
    cmd = [a.python, str(ROOT / "bench/peers/mnist_torch.py"), "--model", a.model,
           "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--threads", str(a.threads)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    total = float(re.search(r"total ([0-9.]+) s", text).group(1))
    accuracy = float(re.findall(r"test accuracy ([0-9.]+)%", text)[-1]) / 100
    return total, accuracy


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="cnn", choices=["mlp", "cnn"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.runs):
            ours.append(gradlab_run(a, f"{tmp}/run{r}"))
            theirs.append(torch_run(a))
    g = statistics.median(t for t, _ in ours)
    t = statistics.median(t for t, _ in theirs)
    result = {
        "model": a.model, "epochs": a.epochs, "batch_size": a.batch_size, "threads": a.threads,
        "gradlab_seconds": [x for x, _ in ours], "torch_seconds": [x for x, _ in theirs],
        "gradlab_median_s": g, "torch_median_s": t, "ratio": g / t,
        "gradlab_accuracy": [x for _, x in ours], "torch_accuracy": [x for _, x in theirs],
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{a.model}, {a.epochs} epochs, batch {a.batch_size}, {a.threads} threads, median of {a.runs} interleaved runs:")
    print(f"  gradlab {g:.2f} s/run ({g / a.epochs:.2f} s/epoch), PyTorch {t:.2f} s/run ({t / a.epochs:.2f} s/epoch): {g / t:.2f}x")
    print(f"  test accuracy: gradlab {', '.join(f'{100 * x:.2f}%' for _, x in ours)}; "
          f"PyTorch {', '.join(f'{100 * x:.2f}%' for _, x in theirs)}")


if __name__ == "__main__":
    main()
