"""FastpropClassifier / FastpropRegressor against scikit-learn's MLPClassifier / MLPRegressor.

The same data, hyperparameters and random_state (so the same initial weights) on both sides;
solvers adam and lbfgs; fit time (median of interleaved repeats: fastprop, scikit-learn,
fastprop, ...), test accuracy / R^2. One BLAS thread everywhere (set before NumPy loads).

    python benchmarks/bench_sklearn.py [--repeats 3] [--seeds 0,1]

Data: the bundled digits (1,797 8x8 images, 10 classes; StandardScaler, 75 / 25 stratified
split) and make_friedman1 (2,000 samples, 10 features, noise 0.5; target standardized).
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time             # noqa: E402
import warnings         # noqa: E402

import numpy as np      # noqa: E402
from sklearn.datasets import make_friedman1                       # noqa: E402
from sklearn.exceptions import ConvergenceWarning                 # noqa: E402
from sklearn.model_selection import train_test_split              # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor    # noqa: E402
from sklearn.preprocessing import StandardScaler                  # noqa: E402

from fastprop.datasets import load_digits                         # noqa: E402
from fastprop.sklearn import FastpropClassifier, FastpropRegressor  # noqa: E402


def _digits():
    X, y = load_digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


def _friedman():
    X, y = make_friedman1(n_samples=2000, noise=0.5, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    sc = StandardScaler().fit(Xtr)
    mu, sd = ytr.mean(), ytr.std()
    return sc.transform(Xtr), sc.transform(Xte), (ytr - mu) / sd, (yte - mu) / sd


def _timed_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X, y)
        return time.perf_counter() - t0


def run(repeats=3, seeds=(0, 1)):
    cases = [
        ("digits", _digits(), FastpropClassifier, MLPClassifier, "accuracy"),
        ("friedman1", _friedman(), FastpropRegressor, MLPRegressor, "R^2"),
    ]
    rows = []
    for name, (Xtr, Xte, ytr, yte), ours_cls, ref_cls, metric in cases:
        for solver in ("adam", "lbfgs"):
            kw = dict(hidden_layer_sizes=(100,), solver=solver, max_iter=200)
            times = {"fastprop": [], "sklearn": []}
            scores = {"fastprop": [], "sklearn": []}
            iters = {"fastprop": [], "sklearn": []}
            for seed in seeds:
                for rep in range(repeats):        # interleaved: fastprop, sklearn, ...
                    for who, cls in (("fastprop", ours_cls), ("sklearn", ref_cls)):
                        est = cls(random_state=seed, **kw)
                        times[who].append(_timed_fit(est, Xtr, ytr))
                        if rep == 0:              # every repeat fits the same model
                            scores[who].append(est.score(Xte, yte))
                            iters[who].append(est.n_iter_)
            t_fp, t_sk = np.median(times["fastprop"]), np.median(times["sklearn"])
            rows.append((name, solver, metric, np.mean(scores["fastprop"]),
                         np.mean(scores["sklearn"]), np.mean(iters["fastprop"]),
                         np.mean(iters["sklearn"]), t_fp, t_sk, t_sk / t_fp))
    print("| data | solver | metric | fastprop | scikit-learn | iterations fp / sk | "
          "fit s fastprop | fit s scikit-learn | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.0f} / {r[6]:.0f} "
              f"| {r[7]:.3f} | {r[8]:.3f} | {r[9]:.1f}x |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", default="0,1")
    args = p.parse_args(argv)
    run(args.repeats, tuple(int(s) for s in args.seeds.split(",")))


if __name__ == "__main__":
    main()
