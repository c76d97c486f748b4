"""Batch inference over a Spark DataFrame with a broadcast fastprop model: ``mapInPandas`` with a
``Sequential`` and a ``pandas_udf`` with a fitted ``FastpropClassifier``, in ``local[2]`` mode
(UI off, bound to 127.0.0.1). Predictions must equal ``predict`` in this process."""
import os
import pickle
import sys
import warnings

import numpy as np
import pytest

from conftest import assert_close

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("pyspark")

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning")

N_FEATURES = 5
COLS = [f"f{i}" for i in range(N_FEATURES)]


def _java_present():
    import shutil
    return shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))


@pytest.fixture(scope="module")
def spark():
    """A local[2] session started once for the module: no UI, driver bound to 127.0.0.1,
    Python workers on this interpreter with one BLAS thread each."""
    if not _java_present():
        pytest.skip("Spark needs a Java runtime (java not found)")
    from pyspark.sql import SparkSession
    # the JVM (and the Python workers it starts) inherit this process' environment at launch
    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "OPENBLAS_NUM_THREADS")}
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            session = (SparkSession.builder.master("local[2]")
                       .appName("fastprop-tests")
                       .config("spark.ui.enabled", "false")
                       .config("spark.ui.showConsoleProgress", "false")
                       .config("spark.driver.host", "127.0.0.1")
                       .config("spark.driver.bindAddress", "127.0.0.1")
                       .config("spark.sql.shuffle.partitions", "2")
                       .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                       .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
                       .getOrCreate())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _data(n=500, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_FEATURES)).astype(dtype)
    y = (X[:, 0] - X[:, 1] + 0.5 * X[:, 2] > 0).astype(np.int64) + (X[:, 4] > 0.8)
    return X, y


def _frame(spark, X, partitions=4):
    """A Spark DataFrame (id, f0 .. f4) of X's rows, spread over ``partitions``."""
    import pandas as pd
    pdf = pd.DataFrame(X.astype(np.float64), columns=COLS)
    pdf.insert(0, "id", np.arange(len(X), dtype=np.int64))
    return spark.createDataFrame(pdf).repartition(partitions)


def _model(dtype):
    import fastprop as fp
    model = fp.Sequential([fp.Dense(N_FEATURES, 16, activation="relu", dtype=dtype, seed=0),
                           fp.Dense(16, 3, activation="softmax", dtype=dtype, seed=1)],
                          dtype=dtype, seed=0)
    X, y = _data(dtype=dtype)
    model.fit(X, y, epochs=5, batch_size=32, verbose=0)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_map_in_pandas_broadcast_sequential(spark, dtype):
    model = _model(dtype)
    X, _ = _data(n=700, seed=1, dtype=np.float64)
    # what is broadcast: the model's bytes (fastprop's file format; no pickle, no code)
    bc = spark.sparkContext.broadcast(model.to_bytes())

    cols = COLS

    # runs on the executors: everything it uses is imported or captured here (a function of
    # this test module would be pickled by reference, and the executors cannot import it)
    def predict_batches(batches):
        import pandas as pd
        import fastprop as fp
        net = fp.from_bytes(bc.value)                  # once per task, not per batch
        for pdf in batches:
            proba = net.predict(pdf[cols].to_numpy())  # (n, 3), whatever the frame's layout
            yield pd.DataFrame({"id": pdf["id"].to_numpy(),
                                "label": proba.argmax(axis=1).astype(np.int64),
                                "proba": list(proba.astype(np.float64))})

    out = _frame(spark, X).mapInPandas(predict_batches,
                                       "id long, label long, proba array<double>")
    rows = sorted(out.collect(), key=lambda r: r.id)
    assert [r.id for r in rows] == list(range(len(X)))
    expected = model.predict(X)                       # X float64, cast to the model's dtype
    got = np.array([r.proba for r in rows])
    # the same rows in other batch sizes: GEMM's blocking may round the last bit differently
    assert_close(got.astype(dtype), expected, dtype)
    np.testing.assert_array_equal([r.label for r in rows], expected.argmax(axis=1))
    bc.unpersist()


def test_pandas_udf_broadcast_estimator(spark):
    pytest.importorskip("sklearn")
    from pyspark.sql.functions import col, pandas_udf
    from sklearn.exceptions import ConvergenceWarning
    import pandas as pd
    from fastprop.sklearn import FastpropClassifier
    X, y = _data()
    labels = np.array(["low", "mid", "high"])[y]        # string classes travel too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = FastpropClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0,
                                 n_threads=1).fit(X, labels)
    bc = spark.sparkContext.broadcast(pickle.dumps(est))

    @pandas_udf("string")
    def predict_label(*columns: pd.Series) -> pd.Series:
        clf = pickle.loads(bc.value)
        return pd.Series(clf.predict(np.column_stack([c.to_numpy() for c in columns])))

    Xt, _ = _data(n=300, seed=2)
    out = _frame(spark, Xt, partitions=3).select("id", predict_label(*[col(c) for c in COLS])
                                                 .alias("label"))
    rows = sorted(out.collect(), key=lambda r: r.id)
    assert [r.id for r in rows] == list(range(len(Xt)))
    np.testing.assert_array_equal([r.label for r in rows], est.predict(Xt.astype(np.float64)))
    bc.unpersist()
