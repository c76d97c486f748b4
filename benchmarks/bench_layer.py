"""One dense layer, forward + backward: fastprop against the pure-NumPy reference.

    python benchmarks/bench_layer.py [--repeats 200] [--threads 1] [--dtype float32]

Prints median and minimum microseconds per forward+backward (ReLU) for three shapes, timed
interleaved (fastprop, reference, fastprop, ...) in one process, and the ratio of medians.
"fastprop block" is the public Dense.forward / Dense.backward (argument checks, output
allocation, copies that keep user arrays safe); "fastprop kernel" is the compiled entry points
on preallocated buffers, which is what a model's training step runs.
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import fastprop as fp
from fastprop import reference as R
from fastprop._core import _kernels as K

SHAPES = [(1, 64, 32), (32, 784, 128), (256, 1024, 1024)]


def blas_description():
    libs = [f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads, "
            f"{i.get('architecture')}) in {i['filepath'].split('site-packages/')[-1]}"
            for i in threadpool_info() if i["user_api"] == "blas"]
    return "; ".join(libs)


def time_interleaved(fns, repeats, inner):
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner * 1e6)
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in samples.items()}


def case(n, n_in, n_out, dtype, repeats):
    rng = np.random.default_rng(0)
    layer = fp.Dense(n_in, n_out, activation="relu", dtype=dtype, seed=0)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    da = rng.standard_normal((n, n_out)).astype(dtype)
    W, b = layer.W, layer.b
    z, a, dz = (np.empty((n, n_out), dtype) for _ in range(3))
    dW, db, da_prev = np.zeros_like(W), np.zeros_like(b), np.empty_like(X)
    code = 1

    def block():
        a_, cache = layer.forward(X)
        layer.backward(da, cache)

    def kernel():
        K.dense_forward(X, W, b, code, z, a)
        dW.fill(0)
        db.fill(0)
        K.dense_backward(X, W, z, a, da, code, dz, dW, db, da_prev)

    def reference():
        _, cache = R.dense_forward(X, W, b, "relu")
        R.dense_backward(da, cache)

    work = n * n_in * n_out
    inner = max(1, int(2e6 // max(work, 1)))
    return time_interleaved({"block": block, "kernel": kernel, "reference": reference},
                            repeats, inner)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = p.parse_args(argv)
    with threadpool_limits(args.threads):
        print(f"fastprop {fp.__version__}, {args.dtype}, BLAS threads {args.threads}, "
              f"median (min) of {args.repeats} interleaved repeats, us per forward+backward")
        print(f"BLAS: {blas_description()}")
        head = f"{'batch, n_in->n_out':>22} | {'fastprop block':>16} | {'fastprop kernel':>16} | " \
               f"{'NumPy reference':>16} | {'ref/block':>9} | {'ref/kernel':>10}"
        print(head)
        print("-" * len(head))
        for n, n_in, n_out in SHAPES:
            r = case(n, n_in, n_out, np.dtype(args.dtype), args.repeats)
            fmt = lambda k: f"{r[k][0]:8.1f} ({r[k][1]:.1f})"
            print(f"{f'{n}, {n_in}->{n_out}':>22} | {fmt('block'):>16} | {fmt('kernel'):>16} | "
                  f"{fmt('reference'):>16} | {r['reference'][0] / r['block'][0]:8.2f}x | "
                  f"{r['reference'][0] / r['kernel'][0]:9.2f}x")


if __name__ == "__main__":
    main()
