"""Tests for the bundled data sets in :mod:`fastprop.datasets`."""

from __future__ import annotations

import numpy as np
import pytest

from fastprop.datasets import DIGITS_CITATION, load_digits

N_SAMPLES = 1797
N_FEATURES = 64
# Per-class sample counts of the 1,797-sample UCI digits set (labels 0..9).
EXPECTED_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture
def digits():
    return load_digits()


def test_returns_tuple_of_two_arrays(digits):
    assert isinstance(digits, tuple)
    assert len(digits) == 2
    X, y = digits
    assert isinstance(X, np.ndarray)
    assert isinstance(y, np.ndarray)


def test_shapes(digits):
    X, y = digits
    assert X.shape == (N_SAMPLES, N_FEATURES)
    assert y.shape == (N_SAMPLES,)


def test_dtypes(digits):
    X, y = digits
    assert X.dtype == np.float64
    assert y.dtype == np.int64


def test_value_range(digits):
    X, _ = digits
    assert np.all(np.isfinite(X))
    assert X.min() == 0.0
    assert X.max() == 16.0
    # Pixel counts are whole numbers.
    np.testing.assert_array_equal(X, np.round(X))


def test_all_classes_present(digits):
    _, y = digits
    np.testing.assert_array_equal(np.unique(y), np.arange(10))


def test_class_counts(digits):
    _, y = digits
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == N_SAMPLES
    np.testing.assert_array_equal(counts, EXPECTED_CLASS_COUNTS)


def test_known_first_sample(digits):
    # The first image is a "0" (same as sklearn.datasets.load_digits()).
    X, y = digits
    assert y[0] == 0
    np.testing.assert_array_equal(
        X[0, :8], [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
    )


def test_deterministic():
    X1, y1 = load_digits()
    X2, y2 = load_digits()
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)


def test_returns_fresh_writable_copies():
    X1, y1 = load_digits()
    X2, y2 = load_digits()
    assert X1.flags.writeable and y1.flags.writeable
    assert not np.shares_memory(X1, X2)
    assert not np.shares_memory(y1, y2)

    X_ref, y_ref = X2.copy(), y2.copy()
    X1[...] = -1.0
    y1[...] = -1
    X3, y3 = load_digits()
    np.testing.assert_array_equal(X3, X_ref)
    np.testing.assert_array_equal(y3, y_ref)
    np.testing.assert_array_equal(X2, X_ref)
    np.testing.assert_array_equal(y2, y_ref)


def test_citation():
    assert isinstance(DIGITS_CITATION, str)
    assert "Alpaydin" in DIGITS_CITATION
    assert "Kaynak" in DIGITS_CITATION
    assert "1998" in DIGITS_CITATION
    assert "10.24432/C50P49" in DIGITS_CITATION
    assert "CC BY 4.0" in DIGITS_CITATION


def test_matches_scikit_learn(digits):
    datasets = pytest.importorskip("sklearn.datasets")
    X_ref, y_ref = datasets.load_digits(return_X_y=True)
    X, y = digits
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
