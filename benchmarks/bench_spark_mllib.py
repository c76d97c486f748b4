"""fastprop's FastpropClassifier against Spark MLlib's MultilayerPerceptronClassifier on the digits.

    python benchmarks/bench_spark_mllib.py [--hidden 64] [--iters 100] [--tol 1e-6]
                                           [--repeats 3] [--master local[2]] [--json FILE]

Same data (the bundled digits, ``X / 16``, one seeded 80/20 split), same layer sizes
(64-hidden...-10), the same number of iterations where they map:

- *MLlib*: ``MultilayerPerceptronClassifier(layers=[64, *hidden, 10], maxIter=iters,
  solver="l-bfgs", tol=tol, blockSize=128, seed=seed)`` (sigmoid hidden layers, softmax
  output, its only architecture); the training DataFrame is cached and counted before the
  clock starts.
- *fastprop lbfgs* (when the estimator has ``solver``): ``FastpropClassifier(hidden,
  activation="logistic", solver="lbfgs", max_iter=iters, tol=tol)``: the same optimizer
  family, one iteration = one full-batch L-BFGS step, as in MLlib (``tol`` is MLlib's relative
  change of the loss there, scikit-learn's ``gtol`` / loss-improvement rule here).
- *fastprop adam*: ``FastpropClassifier(hidden, activation="logistic", max_iter=iters,
  batch_size=32, tol=0)``: ``iters`` epochs of minibatch Adam (lr 1e-3).

The fits are interleaved (MLlib, fastprop, MLlib, ...); reported: the median wall time of
``fit`` over the repeats, the test accuracy and the iterations (epochs) run by the last fit
(MLlib's from its training summary). fastprop runs in this process with one BLAS thread
(``n_threads=1``); MLlib uses the master's cores (2 for ``local[2]``).
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="64", help="hidden sizes, comma-separated (default 64)")
    p.add_argument("--iters", type=int, default=100, help="maxIter / max_iter (default 100)")
    p.add_argument("--tol", type=float, default=1e-6,
                   help="convergence tolerance of both L-BFGS fits (default 1e-6, MLlib's)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved fits of each (default 3)")
    p.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every number to this file")
    args = p.parse_args(argv)
    args.hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    if not args.hidden or min(args.hidden) < 1:
        p.error("--hidden needs positive sizes")
    if args.iters < 1 or args.repeats < 1:
        p.error("--iters and --repeats must be >= 1")
    return args


def split_digits(seed):
    from fastprop.datasets import load_digits
    X, y = load_digits()
    X = X.astype(np.float64) / 16.0
    idx = np.random.default_rng(seed).permutation(len(X))
    cut = int(0.8 * len(X))
    return X[idx[:cut]], y[idx[:cut]], X[idx[cut:]], y[idx[cut:]]


def spark_session(master):
    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(master).appName("fastprop-vs-mllib")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.shuffle.partitions", "2")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def mllib_frames(spark, Xtr, ytr, Xte, yte):
    from pyspark.ml.linalg import Vectors

    def frame(X, y):
        rows = [(float(label), Vectors.dense(x)) for x, label in zip(X, y)]
        return spark.createDataFrame(rows, ["label", "features"]).cache()

    train, test = frame(Xtr, ytr), frame(Xte, yte)
    train.count()
    test.count()
    return train, test


def fit_mllib(train, test, hidden, n_classes, iters, tol, seed):
    from pyspark.ml.classification import MultilayerPerceptronClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    mlp = MultilayerPerceptronClassifier(layers=[train.first().features.size, *hidden,
                                                 n_classes],
                                         maxIter=iters, tol=tol, solver="l-bfgs",
                                         blockSize=128, seed=seed)
    t0 = time.perf_counter()
    model = mlp.fit(train)
    seconds = time.perf_counter() - t0
    acc = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(test))
    try:
        summary = model.summary() if callable(model.summary) else model.summary  # 4.x: a method
        iters_done = int(summary.totalIterations)
    except Exception as exc:            # pragma: no cover - no training summary in this Spark
        print(f"MLlib training summary unavailable: {exc!r}", file=sys.stderr)
        iters_done = None
    return seconds, float(acc), iters_done


def fastprop_estimators(hidden, iters, tol, seed):
    from fastprop.sklearn import FastpropClassifier
    common = dict(hidden_layer_sizes=hidden, activation="logistic", max_iter=iters,
                  random_state=seed, n_threads=1)
    out = {}
    if "solver" in FastpropClassifier().get_params():
        out["fastprop lbfgs"] = lambda: FastpropClassifier(solver="lbfgs", tol=tol, **common)
    out["fastprop adam"] = lambda: FastpropClassifier(batch_size=32, tol=0.0,
                                                      n_iter_no_change=iters + 1, **common)
    return out


def fit_fastprop(make, Xtr, ytr, Xte, yte):
    from sklearn.exceptions import ConvergenceWarning
    est = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(Xtr, ytr)
        seconds = time.perf_counter() - t0
    return seconds, float(est.score(Xte, yte)), int(est.n_iter_)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    Xtr, ytr, Xte, yte = split_digits(args.seed)
    n_classes = int(ytr.max()) + 1
    spark = spark_session(args.master)
    try:
        train, test = mllib_frames(spark, Xtr, ytr, Xte, yte)
        runs = {"MLlib l-bfgs": lambda: fit_mllib(train, test, args.hidden, n_classes,
                                                  args.iters, args.tol, args.seed)}
        for name, make in fastprop_estimators(args.hidden, args.iters, args.tol, args.seed).items():
            runs[name] = lambda make=make: fit_fastprop(make, Xtr, ytr, Xte, yte)
        for run in runs.values():                     # warm-up: JIT, imports, first calls
            run()
        times = {name: [] for name in runs}
        acc, n_iter = {}, {}
        for _ in range(args.repeats):                 # interleaved
            for name, run in runs.items():
                seconds, acc[name], n_iter[name] = run()
                times[name].append(seconds)
    finally:
        spark.stop()
    med = {name: statistics.median(t) for name, t in times.items()}
    base = med["MLlib l-bfgs"]
    print(f"digits: {len(Xtr)} train / {len(Xte)} test, layers 64-"
          f"{'-'.join(map(str, args.hidden))}-{n_classes}, {args.iters} iterations, "
          f"master {args.master}, median of {args.repeats} interleaved fits")
    print(f"{'':16s} {'fit (s)':>9s} {'MLlib/this':>11s} {'test acc':>9s} {'iterations':>11s}")
    for name in runs:
        print(f"{name:16s} {med[name]:9.3f} {base / med[name]:10.1f}x {acc[name]:9.4f} "
              f"{n_iter[name] if n_iter[name] is not None else '?':>11}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {**vars(args), "hidden": list(args.hidden)}, "times": times,
                       "median": med, "accuracy": acc, "iterations": n_iter}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
