"""Training step of a BatchNorm net: fastprop against PyTorch (and fastprop without BatchNorm).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_norm.py [--repeats 7] [--steps 50]

784-256-BN-relu-256-BN-relu-10, batch 128, float32, Adam(lr=1e-3), cross-entropy, one thread
each (torch.set_num_threads(1)). The three step functions are timed interleaved in one process
(steps per sample, then the next function); prints the median and minimum ms per step and the
ratio of medians.
"""
import argparse
import time

import numpy as np
import torch

import fastprop as fp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128)

    def fastprop_net(bn):
        norm = (lambda: [fp.BatchNorm()]) if bn else (lambda: [])
        return fp.Sequential([fp.Dense(784, 256), *norm(), fp.Activation("relu"),
                              fp.Dense(256, 256), *norm(), fp.Activation("relu"),
                              fp.Dense(256, 10, activation="softmax")], loss="cross_entropy",
                             optimizer=fp.optim.Adam(lr=1e-3), dtype="float32", seed=0)

    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.BatchNorm1d(256),
                              torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.BatchNorm1d(256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def torch_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(Xt), yt).backward()
        opt.step()

    with_bn, without_bn = fastprop_net(True), fastprop_net(False)
    fns = {"fastprop BN": lambda: with_bn.train_step(X, y), "torch BN": torch_step,
           "fastprop no BN": lambda: without_bn.train_step(X, y)}
    for f in fns.values():
        for _ in range(20):
            f()
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                f()
            times[k].append((time.perf_counter() - t0) / args.steps * 1e3)
    for k, v in times.items():
        print(f"{k:15s} median {np.median(v):.3f} ms/step  min {min(v):.3f}")
    print(f"torch / fastprop (BN), medians: "
          f"{np.median(times['torch BN']) / np.median(times['fastprop BN']):.2f}")


if __name__ == "__main__":
    main()
