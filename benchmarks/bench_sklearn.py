"""FastpropClassifier / FastpropRegressor against scikit-learn's MLPClassifier / MLPRegressor.

The same data, hyperparameters and random_state (so the same initial weights) on both sides;
solvers adam and lbfgs; fastprop at its default float32 and at float64 (scikit-learn computes
in float64 on float64 X); fit time (median of interleaved repeats: fastprop float32, float64,
scikit-learn, fastprop float32, ...), test accuracy / R^2 (mean over the seeds). One BLAS thread everywhere (set before NumPy loads).

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
            who_cls = (("fastprop", ours_cls, {}), ("fastprop64", ours_cls, {"dtype": "float64"}),
                       ("sklearn", ref_cls, {}))
            times = {who: [] for who, _, _ in who_cls}
            scores = {who: [] for who, _, _ in who_cls}
            iters = {who: [] for who, _, _ in who_cls}
            for seed in seeds:
                for rep in range(repeats):        # interleaved: fastprop, sklearn, ...
                    for who, cls, extra in who_cls:
                        est = cls(random_state=seed, **kw, **extra)
                        times[who].append(_timed_fit(est, Xtr, ytr))
                        if rep == 0:              # every repeat fits the same model
                            scores[who].append(est.score(Xte, yte))
                            iters[who].append(est.n_iter_)
            t = {who: float(np.median(v)) for who, v in times.items()}
            sc = {who: float(np.mean(v)) for who, v in scores.items()}
            it = {who: float(np.mean(v)) for who, v in iters.items()}
            rows.append((name, solver, metric, sc, it, t))
    print("| data | solver | metric fp32 / fp64 / sklearn | iterations fp32 / fp64 / sklearn | "
          "fit s fp32 / fp64 / sklearn | sklearn / fp32 | sklearn / fp64 |")
    print("|---|---|---|---|---|---|---|")
    for name, solver, metric, sc, it, t in rows:
        print(f"| {name} | {solver} | {metric} {sc['fastprop']:.4f} / {sc['fastprop64']:.4f} / "
              f"{sc['sklearn']:.4f} | {it['fastprop']:.0f} / {it['fastprop64']:.0f} / "
              f"{it['sklearn']:.0f} | {t['fastprop']:.3f} / {t['fastprop64']:.3f} / "
              f"{t['sklearn']:.3f} | {t['sklearn'] / t['fastprop']:.1f}x | "
              f"{t['sklearn'] / t['fastprop64']:.1f}x |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", default="0,1")
    args = p.parse_args(argv)
    run(args.repeats, tuple(int(s) for s in args.seeds.split(",")))


if __name__ == "__main__":
    main()
