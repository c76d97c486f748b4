"""fastprop's scikit-learn estimators under Dask: ``dask_ml.wrappers.ParallelPostFit`` (predict,
predict_proba, score over chunked dask arrays and dask DataFrames) and
``dask_ml.wrappers.Incremental`` (partial_fit over the blocks of a chunked dask array), on a
two-process ``distributed.LocalCluster`` whose workers use one BLAS thread each. Every result
is checked against the same estimator run in this process."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("pandas")
pytest.importorskip("dask")
pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytest.importorskip("dask_ml")

TIMEOUT = 120           # seconds for any one distributed computation
N_FEATURES = 6


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread and one BLAS thread each, bound to 127.0.0.1; started
    once for the module."""
    from distributed import Client, LocalCluster
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, env=env) as cluster:
        with Client(cluster, timeout=TIMEOUT) as c:
            c.wait_for_workers(2, timeout=TIMEOUT)
            yield c


def _data(n=600, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_FEATURES)).astype(dtype)
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, y


def _classifier(**kw):
    from fastprop.sklearn import FastpropClassifier
    kw = {"hidden_layer_sizes": (16,), "max_iter": 30, "batch_size": 32, "random_state": 0,
          "n_threads": 1, **kw}
    return FastpropClassifier(**kw)


def _fitted(X, y, **kw):
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _classifier(**kw).fit(X, y)


def _compute(client, collection):
    return client.compute(collection).result(timeout=TIMEOUT)


def _raise_on_feature_name_warnings():
    """Run on each worker: a feature-name warning becomes an error there (a warning in a worker
    process never reaches the test's ``catch_warnings``)."""
    warnings.filterwarnings("error", message=".*feature names.*")
    return True


def test_workers_use_one_blas_thread(client):
    import fastprop as fp

    def threads():
        import os
        return os.environ.get("OPENBLAS_NUM_THREADS"), fp.get_num_threads()

    got = client.run(threads)
    assert len(got) == 2
    assert all(v == ("1", 1) for v in got.values()), got


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parallel_post_fit_dask_array(client, dtype):
    import dask.array as da
    from dask_ml.wrappers import ParallelPostFit
    X, y = _data(dtype=np.dtype(dtype))
    est = _fitted(X, y, dtype=dtype)
    ppf = ParallelPostFit(_fitted(X, y, dtype=dtype))      # fitted the same way, separately
    dX = da.from_array(X, chunks=(128, N_FEATURES))        # uneven last block
    dy = da.from_array(y, chunks=128)
    pred = ppf.predict(dX)
    proba = ppf.predict_proba(dX)
    assert isinstance(pred, da.Array) and isinstance(proba, da.Array)
    pred, proba = _compute(client, pred), _compute(client, proba)
    np.testing.assert_array_equal(pred, est.predict(X))
    np.testing.assert_array_equal(proba, est.predict_proba(X))
    assert proba.dtype == np.dtype(dtype) and proba.shape == (len(X), 3)
    assert ppf.score(dX, dy) == pytest.approx(est.score(X, y), abs=1e-12)
    assert 0.7 < est.score(X, y) <= 1


def test_parallel_post_fit_dask_dataframe(client):
    import dask.dataframe as dd
    import pandas as pd
    from dask_ml.wrappers import ParallelPostFit
    X, y = _data()
    cols = [f"f{i}" for i in range(N_FEATURES)]
    df = pd.DataFrame(X, columns=cols)
    sy = pd.Series(y, name="y")
    ddf = dd.from_pandas(df, npartitions=4)
    dsy = dd.from_pandas(sy, npartitions=4)
    assert all(client.run(_raise_on_feature_name_warnings).values())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names.*")
        est = _fitted(df, y)
        np.testing.assert_array_equal(est.feature_names_in_, cols)
        ppf = ParallelPostFit(_fitted(df, y))
        pred = _compute(client, ppf.predict(ddf))
        proba = _compute(client, ppf.predict_proba(ddf))
        score = ppf.score(ddf, dsy)
        expected_pred, expected_proba = est.predict(df), est.predict_proba(df)
    np.testing.assert_array_equal(np.asarray(pred), expected_pred)
    np.testing.assert_array_equal(np.asarray(proba), expected_proba)
    assert score == pytest.approx(est.score(df, sy), abs=1e-12)
    # the names are checked on the workers: reordered columns are refused there
    with pytest.raises(ValueError, match="feature names"):
        _compute(client, ppf.predict(ddf[cols[::-1]]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_incremental_partial_fit_over_blocks(client, dtype):
    import dask.array as da
    from dask_ml.wrappers import Incremental
    X, y = _data(dtype=np.dtype(dtype))
    chunk = 100
    dX = da.from_array(X, chunks=(chunk, N_FEATURES))
    dy = da.from_array(y, chunks=chunk)
    classes = np.unique(y)
    inc = Incremental(_classifier(dtype=dtype), shuffle_blocks=False)
    for _ in range(3):                  # three passes, each one partial_fit per block
        inc.partial_fit(dX, dy, classes=classes)
    local = _classifier(dtype=dtype)
    for _ in range(3):
        for i in range(0, len(X), chunk):
            local.partial_fit(X[i:i + chunk], y[i:i + chunk], classes=classes)
    fitted = inc.estimator_
    np.testing.assert_array_equal(fitted.model_.params, local.model_.params)
    assert fitted.n_iter_ == local.n_iter_
    np.testing.assert_array_equal(_compute(client, inc.predict(dX)), local.predict(X))
    np.testing.assert_array_equal(_compute(client, inc.predict_proba(dX)),
                                  local.predict_proba(X))
    assert inc.score(dX, dy) == pytest.approx(local.score(X, y), abs=1e-12)
    assert inc.score(dX, dy) > 0.6
