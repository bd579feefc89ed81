#!/usr/bin/env python3
"""The reliability tables of issue #14, re-run against a built `gradlab` binary.

    python3 scripts/reliability.py [--bin target/release/gradlab] [--kills 10]

Four tables, each case run as a user would run it, and each outcome classified:
  refused   exit status 1 or 2 with a message (what nonsense must get)
  accepted  exit status 0 on nonsense (a silent wrong result: must be 0)
  crashed   a panic, an abort, a signal, or a message over 4 KB (must be 0)
  hung      no answer within the time limit (must be 0)
1. specs: out-of-domain, overflowing, malformed and deeply nested optimizer and schedule
   specs through `surface` and `schedule`, and nonsense `train` flags;
2. data: broken MNIST folders through `train --data`;
3. checkpoints: corrupted or tampered checkpoints through `train --resume` and `hessian`;
4. kills: `kill -9` at random moments of a run, then `--resume`, compared bit for bit
   with an uninterrupted run.
"""

import argparse
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120


def run(cmd, timeout=TIMEOUT):
    """(status, stderr) of a command; status None when it hung."""
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    return p.returncode, p.stderr.decode("utf-8", "replace")


def classify(status, err):
    if status is None:
        return "hung"
    if status == 0:
        return "accepted"
    if status < 0 or status not in (1, 2) or "panicked" in err or len(err) > 4096:
        return "crashed"
    return "refused"


class Table:
    def __init__(self, name):
        self.name, self.counts, self.bad = name, {}, []

    def add(self, case, status, err):
        kind = classify(status, err)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind != "refused":
            self.bad.append((kind, case, err.strip()[-300:]))

    def report(self):
        total = sum(self.counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        print(f"{self.name}: {total} cases: {parts}")
        for kind, case, err in self.bad:
            print(f"  {kind}: {case}\n    {err}")
        return len(self.bad)


def spec_cases():
    optimizers = {
        "sgd": ["lr", "momentum", "dampening", "weight_decay"],
        "adam": ["lr", "eps", "weight_decay"],
        "adamw": ["lr", "eps", "weight_decay"],
        "rmsprop": ["lr", "alpha", "eps", "momentum"],
        "adagrad": ["lr", "lr_decay", "eps", "initial_accumulator_value"],
        "adadelta": ["lr", "rho", "eps"],
        "nadam": ["lr", "eps", "momentum_decay"],
        "radam": ["lr", "eps"],
        "adamax": ["lr", "eps"],
        "lion": ["lr", "weight_decay"],
        "lamb": ["lr", "eps"],
        "lars": ["lr", "momentum", "trust_coefficient"],
        "adabound": ["lr", "final_lr", "gamma"],
    }
    bad = {
        "lr": ["-1", "inf", "1e400", "nan", "-1e-9"],
        "eps": ["-1", "inf", "nan", "1e400"],
        "momentum": ["-0.1", "1", "1.5", "inf"],
        "dampening": ["-0.5", "2"],
        "weight_decay": ["-1", "inf", "nan"],
        "alpha": ["1", "-0.1", "1.5"],
        "rho": ["1", "-0.1", "2"],
        "lr_decay": ["-1", "inf"],
        "initial_accumulator_value": ["-1", "inf"],
        "momentum_decay": ["-1", "inf"],
        "trust_coefficient": ["-1", "0", "inf"],
        "final_lr": ["-1", "inf"],
        "gamma": ["-1", "inf"],
    }
    for name, keys in optimizers.items():
        for key in keys:
            for value in bad[key]:
                yield f"{name}(lr=0.01, {key}={value})" if key != "lr" else f"{name}({key}={value})"
    for betas in ["(1, 0.999)", "(0.9, 1)", "(-0.1, 0.9)", "(0.9, 0.999, 0.5)", "(0.9)", "(nan, 0.9)"]:
        for name in ["adam", "adamw", "nadam", "radam", "adamax", "lion", "lamb"]:
            yield f"{name}(lr=0.01, betas={betas})"
    for text in ["adam(lr=0.01", "adam lr=0.01", "adam(lr=0.01,,)", "adam(lr==1)", "adam(lr=0x10)",
                 "adam(lr=1e)", "adam(lr=1, lr=2)", "adam(beta1=0.9)", "adamm(lr=1)", "", "()",
                 "adam(lr=\u00bd)", "lookahead(k=0, inner=sgd(lr=0.1))", "lookahead(alpha=2, inner=sgd(lr=0.1))",
                 "lookahead(inner=lookahead(inner=nothing(lr=1)))", "sam(rho=-1, inner=sgd(lr=0.1))",
                 "sgd(lr=0.1, nesterov=true)", "sgd(lr=0.1, nesterov=maybe)"]:
        yield text
    # 5,000 deep (one argument is at most 128 KiB on Linux).
    yield "lookahead(inner=" * 5000 + "sgd(lr=0.1)" + ")" * 5000


def schedule_cases():
    yield from [
        "exponential(gamma=-1)", "exponential(gamma=1e400)", "exponential(gamma=nan)",
        "cosine(t_max=10, eta_min=-1)", "cosine(t_max=0)", "cosine(t_max=-5)", "cosine(t_max=inf)",
        "polynomial(total_iters=10, power=-1)", "polynomial(total_iters=0)", "step(step_size=0)",
        "step(step_size=10, gamma=-0.5)", "multistep(milestones=[5, 2])", "multistep(milestones=[-1])",
        "linear(start_factor=0, total_iters=5)", "linear(start_factor=-1)", "constant(factor=-1)",
        "onecycle(max_lr=-1, total_steps=100)", "onecycle(max_lr=0.1, total_steps=0)",
        "onecycle(max_lr=0.1, total_steps=100, pct_start=1.5)", "cyclic(base_lr=0.1, max_lr=0.01)",
        "cyclic(base_lr=-1, max_lr=0.1)", "wsd(warmup=10, stable=10, decay=10, eta_min=-1)",
        "plateau(factor=1)", "plateau(factor=-1)", "plateau(patience=-1)", "swalr(swa_lr=-1)",
        "swalr(swa_lr=0.1, anneal_strategy=sideways)", "warmup(steps=0)", "sequential()",
        "chained()", "cosine_warm(t_0=0)", "cosine_warm(t_0=10, t_mult=0)", "cosine(t_max=1e400)",
        "nosuch(x=1)", "cosine(t_max=10",
    ]


def train_flag_cases():
    for flags in [["--clip-norm=-1"], ["--clip-norm", "inf"], ["--swa-start", "0", "--swa-lr=-1"],
                  ["--swa-anneal-steps", "5"], ["--train-limit", "0"], ["--epochs", "0"],
                  ["--widths", "0"], ["--widths", "100000000,100000000"], ["--batch-size", "0"],
                  ["--grad-noise", "nan"], ["--ema", "1.5"], ["--dropout", "1"],
                  ["--optimizer", "adam(lr=inf)"], ["--schedule", "exponential(gamma=-1)"],
                  ["--max-skipped", "0"], ["--swa-start", "0", "--swa-lr", "0.01", "--swa-anneal", "up"]]:
        yield flags


def specs_table(binary, work):
    t = Table("specs and flags")
    for spec in spec_cases():
        s, e = run([binary, "surface", "--function", "rosenbrock", "--start=-1,1", "--steps", "20",
                    "--optimizer", spec])
        t.add(f"surface --optimizer '{spec[:80]}'", s, e)
    for spec in schedule_cases():
        s, e = run([binary, "schedule", "--schedule", spec, "--steps", "50"])
        t.add(f"schedule --schedule '{spec}'", s, e)
    for i, flags in enumerate(train_flag_cases()):
        out = os.path.join(work, f"flags{i}")
        s, e = run([binary, "train", "--epochs", "1", "--train-limit", "200", "--out", out] + flags)
        t.add("train " + " ".join(flags), s, e)
    return t


def idx(magic, dims, body):
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return head + body


def good_files(n_train=200, n_test=50):
    rng = random.Random(7)
    files = {}
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        files[f"{prefix}-images-idx3-ubyte"] = idx(2051, [n, 28, 28], bytes(rng.randrange(256) for _ in range(n * 784)))
        files[f"{prefix}-labels-idx1-ubyte"] = idx(2049, [n], bytes(rng.randrange(10) for _ in range(n)))
    return files


def broken_folders():
    """(description, function that fills a folder)."""
    img, lab = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"

    def edit(name, change):
        def fill(d):
            files = good_files()
            files[name] = change(files[name])
            for k, v in files.items():
                with open(os.path.join(d, k), "wb") as f:
                    f.write(v)
        return fill

    def special(name, make):
        def fill(d):
            for k, v in good_files().items():
                if k != name:
                    with open(os.path.join(d, k), "wb") as f:
                        f.write(v)
            make(os.path.join(d, name))
        return fill

    cases = [
        ("images truncated by 1 byte", edit(img, lambda b: b[:-1])),
        ("images with 1 extra byte", edit(img, lambda b: b + b"\0")),
        ("images header only", edit(img, lambda b: b[:16])),
        ("images 10 bytes", edit(img, lambda b: b[:10])),
        ("images empty", edit(img, lambda b: b"")),
        ("images wrong magic", edit(img, lambda b: (2049).to_bytes(4, "big") + b[4:])),
        ("images 0x0", edit(img, lambda b: idx(2051, [200, 0, 0], b""))),
        ("images 0 rows", edit(img, lambda b: idx(2051, [200, 0, 28], b""))),
        ("images 0 images", edit(img, lambda b: idx(2051, [0, 28, 28], b""))),
        ("images huge count", edit(img, lambda b: idx(2051, [0xFFFFFFFF, 28, 28], b[16:]))),
        ("images huge sides", edit(img, lambda b: idx(2051, [200, 0xFFFFFFFF, 0xFFFFFFFF], b[16:]))),
        ("images 1x1", edit(img, lambda b: idx(2051, [200, 1, 1], bytes(200)))),
        ("labels truncated", edit(lab, lambda b: b[:-1])),
        ("labels wrong magic", edit(lab, lambda b: (2051).to_bytes(4, "big") + b[4:])),
        ("labels class 10", edit(lab, lambda b: b[:-1] + b"\x0a")),
        ("labels class 255", edit(lab, lambda b: b[:8] + b"\xff" + b[9:])),
        ("labels count mismatch", edit(lab, lambda b: idx(2049, [199], b[8:-1]))),
        ("labels empty", edit(lab, lambda b: b"")),
        ("images broken gzip", edit(img, lambda b: b"\x1f\x8b\x08\x00garbage")),
        ("images truncated gzip", edit(img, lambda b: gzip.compress(b)[:-20])),
        ("images random bytes", edit(img, lambda b: bytes(random.Random(3).randrange(256) for _ in range(5000)))),
        ("images missing", special(img, lambda p: None)),
        ("labels missing", special(lab, lambda p: None)),
        ("images is a folder", special(img, os.mkdir)),
        ("images is a FIFO", special(img, os.mkfifo)),
        ("images is a symlink loop", special(img, lambda p: os.symlink(p, p))),
        ("images is a dangling symlink", special(img, lambda p: os.symlink(p + ".nowhere", p))),
        ("images unreadable", special(img, lambda p: (open(p, "wb").write(b"x"), os.chmod(p, 0)))),
        ("test images of another size", edit("t10k-images-idx3-ubyte", lambda b: idx(2051, [50, 14, 14], bytes(50 * 196))))
    ]
    yield from cases


def data_table(binary, work):
    t = Table("broken data folders")
    root = os.geteuid() == 0
    for i, (name, fill) in enumerate(broken_folders()):
        if name == "images unreadable" and root:
            continue  # root reads anything
        d = os.path.join(work, f"data{i}")
        os.makedirs(d)
        fill(d)
        s, e = run([binary, "train", "--data", d, "--epochs", "1", "--out", os.path.join(work, f"dout{i}")], timeout=60)
        t.add(f"--data with {name}", s, e)
    # The same with a folder that is not one.
    s, e = run([binary, "train", "--data", os.path.join(work, "nowhere"), "--out", os.path.join(work, "dnone")])
    t.add("--data with no folder", s, e)
    return t


def train_once(binary, out, epochs, resume=False, extra=()):
    cmd = [binary, "train", "--epochs", str(epochs), "--train-limit", "400", "--batch-size", "50",
           "--widths", "16", "--out", out] + list(extra)
    if resume:
        cmd += ["--resume", out]
    return run(cmd)


def checkpoint_mutations():
    """(description, function(checkpoint folder))."""
    def flip(name, at):
        def f(ck):
            p = os.path.join(ck, name)
            b = bytearray(open(p, "rb").read())
            b[at if at >= 0 else len(b) + at] ^= 0x10
            open(p, "wb").write(b)
        return f

    def truncate(name, keep):
        def f(ck):
            p = os.path.join(ck, name)
            b = open(p, "rb").read()
            open(p, "wb").write(b[:int(len(b) * keep)])
        return f

    def remove(name):
        return lambda ck: os.remove(os.path.join(ck, name))

    def state(change):
        def f(ck):
            p = os.path.join(ck, "state.json")
            s = json.load(open(p))
            change(s)
            open(p, "w").write(json.dumps(s))
        return f

    def rerecorded(name, change):
        # Changes a tensor file and rewrites its checksum (a tamperer who knows the format).
        import zlib

        def f(ck):
            p = os.path.join(ck, name)
            b = bytearray(open(p, "rb").read())
            change(b)
            open(p, "wb").write(b)
            s = json.load(open(os.path.join(ck, "state.json")))
            s["files"][name] = {"bytes": len(b), "crc32": f"{zlib.crc32(bytes(b)):08x}"}
            open(os.path.join(ck, "state.json"), "w").write(json.dumps(s))
        return f

    def nan_into(b):
        n = int.from_bytes(b[:8], "little")
        header = json.loads(b[8:8 + n])
        start = 8 + n + header["fc1.bias"]["data_offsets"][0]
        for k in range(100 if len(b) > start + 400 else 1):
            b[start + 4 * k:start + 4 * k + 4] = b"\x00\x00\xc0\x7f"

    def setkey(*path, value):
        def change(s):
            for k in path[:-1]:
                s = s[k]
            s[path[-1]] = value
        return change

    def delkey(*path):
        def change(s):
            for k in path[:-1]:
                s = s[k]
            del s[path[-1]]
        return change

    cases = []
    for name in ["model.safetensors", "optimizer.safetensors"]:
        for at in [0, 9, 100, -1, -5, -1000]:
            cases.append((f"{name}: bit flip at {at}", flip(name, at)))
        for keep in [0, 0.5, 0.99]:
            cases.append((f"{name}: truncated to {keep:.0%}", truncate(name, keep)))
        cases.append((f"{name}: deleted", remove(name)))
        cases.append((f"{name}: random bytes with checksum", rerecorded(name, lambda b: b.__setitem__(slice(0, len(b)), bytes(len(b))))))
    cases.append(("model: 100 NaNs in fc1.bias with checksum", rerecorded("model.safetensors", nan_into)))
    cases.append(("optimizer: a NaN with checksum", rerecorded("optimizer.safetensors", lambda b: b.__setitem__(slice(len(b) - 4, len(b)), b"\x00\x00\xc0\x7f"))))
    cases.append(("state.json deleted", remove("state.json")))
    cases.append(("state.json truncated", truncate("state.json", 0.5)))
    cases.append(("state.json empty", truncate("state.json", 0)))
    for desc, change in [
        ("version 99", setkey("version", value=99)),
        ("version missing", delkey("version")),
        ("step 7", setkey("step", value=7)),
        ("step -1", setkey("step", value=-1)),
        ("step as text", setkey("step", value="8")),
        ("step missing", delkey("step")),
        ("epoch 0", setkey("epoch", value=0)),
        ("epoch 5", setkey("epoch", value=5)),
        ("epoch missing", delkey("epoch")),
        ("model ''", setkey("config", "model", value="")),
        ("model cnn", setkey("config", "model", value="cnn")),
        ("model missing", delkey("config", "model")),
        ("widths [32]", setkey("config", "widths", value=[32])),
        ("widths missing", delkey("config", "widths")),
        ("optimizer sgd", setkey("config", "optimizer", value="sgd(lr=0.1)")),
        ("optimizer unparsable", setkey("config", "optimizer", value="adam(")),
        ("batch size 64", setkey("config", "batch_size", value=64)),
        ("seed 1", setkey("config", "seed", value=1)),
        ("config missing", delkey("config")),
        ("data fingerprint changed", setkey("data", "train", value="400x28x28 crc32 00000000/00000000")),
        ("files record missing", delkey("files")),
        ("model checksum wrong", setkey("files", "model.safetensors", "crc32", value="00000000")),
        ("model length wrong", setkey("files", "model.safetensors", "bytes", value=12)),
        ("schedule state garbage", setkey("schedule", value={"step": "x"})),
    ]:
        cases.append((f"state.json: {desc}", state(change)))
    return cases


def checkpoint_table(binary, work):
    t = Table("corrupted checkpoints")
    base = os.path.join(work, "ck-base")
    s, e = train_once(binary, base, 1)
    assert s == 0, e
    for i, (desc, mutate) in enumerate(checkpoint_mutations()):
        out = os.path.join(work, f"ck{i}")
        shutil.copytree(base, out)
        mutate(os.path.join(out, "checkpoint"))
        s, e = train_once(binary, out, 2, resume=True)
        t.add(f"train --resume, {desc}", s, e)
        if "schedule" in desc or desc.startswith("state.json: step") or desc.startswith("state.json: epoch") \
                or desc.startswith("state.json: optimizer") or "batch size" in desc or "seed" in desc \
                or "fingerprint" in desc or "widths [32]" in desc or "optimizer:" in desc:
            continue  # only a resume depends on these
        s, e = run([binary, "hessian", "--checkpoint", out, "--batches", "1", "--batch-size", "50"])
        t.add(f"hessian, {desc}", s, e)
    return t


def kill_table(binary, work, trials):
    """Each trial: a run killed at a random moment, resumed, then compared with a run that
    was never interrupted."""
    print(f"kills: {trials} trials", flush=True)
    reference = os.path.join(work, "kill-ref")
    epochs = 6
    s, e = train_once(binary, reference, epochs)
    assert s == 0, e
    ref = json.load(open(os.path.join(reference, "summary.json")))
    t0 = time.time()
    train_once(binary, os.path.join(work, "kill-time"), epochs)
    seconds = time.time() - t0
    rng = random.Random(11)
    identical = 0
    for trial in range(trials):
        out = os.path.join(work, f"kill{trial}")
        cmd = [binary, "train", "--epochs", str(epochs), "--train-limit", "400", "--batch-size", "50",
               "--widths", "16", "--out", out]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, max(0.1, seconds * 0.9)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        resume = os.path.exists(os.path.join(out, "checkpoint")) or os.path.exists(os.path.join(out, "checkpoint.tmp"))
        if os.path.exists(os.path.join(out, "summary.json")):
            # The run finished before the signal came (runs of well under a second vary):
            # there is nothing to resume, and its summary is what is compared.
            print(f"  trial {trial}: the run had finished before the kill")
            s, e = 0, ""
        else:
            s, e = train_once(binary, out, epochs, resume=resume, extra=[] if resume else ["--overwrite"])
        if s != 0 and "no complete checkpoint here" in e:
            # Killed during the first save: the refusal says so, and a fresh start must work.
            print(f"  trial {trial}: killed during the first save, refused clearly; starting afresh")
            s, e = train_once(binary, out, epochs, extra=["--overwrite"])
        if s == 0:
            got = json.load(open(os.path.join(out, "summary.json")))
            same = all(got[k] == ref[k] for k in ["train_loss", "test_loss", "test_accuracy"])
            identical += same
            if not same:
                print(f"  trial {trial}: resumed run differs: {got['train_loss']} vs {ref['train_loss']}")
        else:
            print(f"  trial {trial}: resume failed: {e.strip()[-300:]}")
    print(f"kills: {identical} of {trials} resumed runs bit-identical to the uninterrupted one")
    return trials - identical


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/gradlab"))
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="gradlab-reliability-")
    try:
        bad = 0
        for table in [specs_table, data_table, checkpoint_table]:
            bad += table(args.bin, work).report()
            sys.stdout.flush()
        bad += kill_table(args.bin, work, args.kills)
        print(f"accepted nonsense, crashes, hangs and failed resumes: {bad}")
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
