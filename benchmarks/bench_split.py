"""Where does splitting the batch over threads start to pay? One training step (float32, SGD,
softmax cross-entropy) of several nets and batch sizes, in three modes, each mode in a process
of its own, the processes interleaved over rounds:

- ``one``: ``n_threads=1`` (the one-thread path);
- ``blas``: N threads, batch-splitting off (BLAS threads where a layer reaches WORK_MIN);
- ``split``: N threads, every call batch-split (``set_split_control(0, 1, 2 ** 62)``).

    python benchmarks/bench_split.py [--threads 2] [--rounds 3] [--budget 0.3]
                                     [--nets tiny,digits,small,medium] [--batches 8,16,32,64,128]

Prints median µs per step per mode, the forward multiply-adds of the batch, and the ratios
one / split and blas / split (> 1: the split is faster). ``fastprop._threads.SPLIT_WORK_MIN``
and ``SPLIT_ROWS_MIN`` are set from where one / split rises clearly above 1, ``SPLIT_WORK_MAX``
from where blas / split falls below 1.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

NETS = {"tiny": [64, 32, 10], "digits": [64, 128, 64, 10], "small": [784, 128, 10],
        "medium": [784, 256, 256, 10], "large": [1024, 1024, 1024, 10]}
BATCHES = (8, 16, 32, 64, 128)


def _worker(mode, threads, budget, nets, batches):
    import fastprop as fp
    from fastprop import _threads
    if mode == "split":
        _threads.set_split_control(0, 1, 2 ** 62)
    elif mode == "blas":
        _threads.set_split_control(2 ** 62, 1)
    out = {}
    for name in nets:
        sizes = NETS[name]
        for batch in batches:
            layers = [fp.Dense(a, b, activation="softmax" if i == len(sizes) - 2 else "relu")
                      for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
            m = fp.Sequential(layers, loss="cross_entropy", optimizer=fp.optim.SGD(0.01),
                              dtype="float32", seed=0)
            m.n_threads = 1 if mode == "one" else threads
            rng = np.random.default_rng(0)
            X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
            y = rng.integers(0, sizes[-1], batch)
            for _ in range(20):
                m.train_step(X, y)
            inner = max(1, int(2e-3 / max(1e-7, _once(m, X, y))))
            samples = []
            t_end = time.perf_counter() + budget
            while time.perf_counter() < t_end or len(samples) < 5:
                t0 = time.perf_counter()
                for _ in range(inner):
                    m.train_step(X, y)
                samples.append((time.perf_counter() - t0) / inner * 1e6)
            out[f"{name}/{batch}"] = samples
    print(json.dumps(out))


def _once(m, X, y):
    t0 = time.perf_counter()
    m.train_step(X, y)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=float, default=0.3, help="seconds per configuration")
    p.add_argument("--nets", default="tiny,digits,small,medium",
                   help=f"comma list of {', '.join(NETS)}")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)))
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    nets = args.nets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        p.error(f"unknown nets {unknown}; choose from {', '.join(NETS)}")
    if args.worker:
        return _worker(args.worker[0], int(args.worker[1]), float(args.worker[2]), nets,
                       batches)
    modes = ("one", "blas", "split")
    samples = {m: {} for m in modes}
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    for r in range(args.rounds):
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--worker", mode, str(args.threads),
                                  str(args.budget), "--nets", args.nets,
                                  "--batches", args.batches], env=env, check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
            for key, v in json.loads(out.strip().splitlines()[-1]).items():
                samples[mode].setdefault(key, []).extend(v)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    with open("/proc/loadavg") if os.path.exists("/proc/loadavg") else open(os.devnull) as f:
        load = f.read().split()[:3]
    print(f"{args.threads} threads, {args.rounds} rounds, load average {' '.join(load)}")
    print(f"{'net/batch':14} {'fwd MACs':>10} {'one':>8} {'blas':>8} {'split':>8} "
          f"{'one/split':>9} {'blas/split':>10}")
    for key in samples["one"]:
        name, batch = key.split("/")
        sizes = NETS[name]
        macs = int(batch) * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        med = {m: float(np.median(samples[m][key])) for m in modes}
        print(f"{key:14} {macs:10,} {med['one']:8.1f} {med['blas']:8.1f} {med['split']:8.1f} "
              f"{med['one'] / med['split']:9.2f} {med['blas'] / med['split']:10.2f}")


if __name__ == "__main__":
    sys.exit(main())
