"""What one custom Python layer costs per training step.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_custom_layer.py [--repeats 7]

Two nets, each with and without the README's ``Scale`` layer after its first Dense: tiny
(batch 1, 64-32-10) and small (batch 32, 784-128-10); float32, Adam(lr=1e-3), cross-entropy,
``model.train_step``. The two models of a net are timed interleaved in one process (a sample
of steps of one, then of the other); prints the median microseconds per step and the
difference.
"""
import argparse
import time

import numpy as np

import fastprop as fp


class Scale(fp.Layer):
    def build(self, n_in):
        self.add_param("w", (n_in,), init="ones")
        return n_in

    def forward(self, a_prev, training=False):
        return a_prev * self.w, a_prev

    def backward(self, da, cache):
        return da * self.w, (da * cache).sum(0)


def model(sizes, python_layer):
    layers = [fp.Dense(sizes[0], sizes[1], activation="relu", seed=0)]
    if python_layer:
        layers.append(Scale())
    layers.append(fp.Dense(sizes[1], sizes[2], activation="softmax", seed=1))
    return fp.Sequential(layers, optimizer=fp.optim.Adam(lr=1e-3), seed=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for name, n, sizes, steps in (("tiny", 1, (64, 32, 10), 3000),
                                  ("small", 32, (784, 128, 10), 300)):
        X = rng.standard_normal((n, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[2], n)
        models = {False: model(sizes, False), True: model(sizes, True)}
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for python_layer, m in models.items():
                m.train_step(X, y)
                t0 = time.perf_counter()
                for _ in range(steps):
                    m.train_step(X, y)
                times[python_layer].append((time.perf_counter() - t0) / steps * 1e6)
        a, b = np.median(times[False]), np.median(times[True])
        print(f"{name:5s}  without {a:8.2f} us  with Scale {b:8.2f} us  (+{b - a:.2f} us)")


if __name__ == "__main__":
    main()
