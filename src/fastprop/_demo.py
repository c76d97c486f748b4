"""The demo network and data of ``python -m fastprop demo`` / ``explain``, shared with the
benchmark harness (``fastprop._bench``); both import this module, neither imports the other."""
import numpy as np


def _digits_split(seed):
    from fastprop.datasets import load_digits
    X, y = load_digits()
    X = X / 16.0
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def _demo_model(seed, dtype):
    import fastprop as fp
    return fp.Sequential(
        [fp.Dense(64, 128, activation="relu", seed=seed),
         fp.Dense(128, 64, activation="relu", seed=seed + 1),
         fp.Dense(64, 10, activation="softmax", seed=seed + 2)],
        loss="cross_entropy", optimizer=fp.optim.Adam(lr=2e-3), dtype=dtype, seed=seed)


def _reference_fit(ref, X, y, epochs, batch_size, seed):
    rng = np.random.default_rng(seed)
    Xc = X.astype(ref.dtype)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            ref.train_step(Xc[idx], labels=y[idx])
