"""Where does a second BLAS thread start to pay? One dense layer forward (GEMM with the bias
seeded) at 1 and at N threads, interleaved, median of many repeats, float32 and float64.

    python benchmarks/bench_threads.py [--threads 2] [--repeats 300]

Prints the multiply-adds (n * n_in * n_out) of each shape and the N-thread / 1-thread time
ratio; fastprop._threads.WORK_MIN is set from where the ratio drops clearly below 1.
"""
import argparse
import time

import numpy as np

import fastprop as fp
from fastprop._core import _kernels as K

SHAPES = [(1, 64, 32), (32, 784, 128), (32, 512, 512), (64, 512, 512), (128, 256, 256),
          (128, 784, 256), (256, 256, 256), (128, 512, 512), (256, 512, 512), (128, 1024, 1024),
          (256, 1024, 1024)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args(argv)
    orig = fp.get_num_threads()
    print(f"{fp.blas_info()}; comparing 1 and {args.threads} threads")
    for dtype in (np.float32, np.float64):
        print(f"\n{np.dtype(dtype).name}: shape, M multiply-adds, us at 1 thread, us at "
              f"{args.threads}, ratio")
        for n, n_in, n_out in SHAPES:
            rng = np.random.default_rng(0)
            a = rng.standard_normal((n, n_in)).astype(dtype)
            W = rng.standard_normal((n_in, n_out)).astype(dtype)
            b = np.zeros(n_out, dtype)
            z = np.empty((n, n_out), dtype)
            times = {1: [], args.threads: []}
            reps = max(20, min(args.repeats, int(3e9 / (n * n_in * n_out))))
            for _ in range(reps):
                for t in times:
                    fp.set_num_threads(t)
                    t0 = time.perf_counter()
                    K.dense_forward(a, W, b, 0, z, z)
                    times[t].append(time.perf_counter() - t0)
            one, many = (np.median(times[t]) * 1e6 for t in times)
            print(f"  {n:4d} x {n_in:4d} -> {n_out:4d}  {n * n_in * n_out / 1e6:8.2f}  "
                  f"{one:9.1f}  {many:9.1f}  {many / one:5.2f}")
    fp.set_num_threads(orig)


if __name__ == "__main__":
    main()
