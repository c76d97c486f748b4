"""Small real-world data sets bundled with fastprop.

The data files live next to this module and are read with
:func:`importlib.resources.files`, so they work from a source checkout, an
installed wheel or a zip import alike.  Only NumPy and the standard library
are needed at run time.

See ``LICENSE-digits.txt`` in this directory for the provenance, license and
citation of each bundled data set.
"""

from __future__ import annotations

import functools
import gzip
import io
from importlib import resources

import numpy as np

__all__ = ["DIGITS_CITATION", "load_digits"]

DIGITS_CITATION = (
    "Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten "
    "Digits [Dataset]. UCI Machine Learning Repository. "
    "https://doi.org/10.24432/C50P49. Licensed under CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/)."
)
"""Citation text for the data set returned by :func:`load_digits`."""

_DIGITS_FILE = "digits.npy.gz"
_DIGITS_N_SAMPLES = 1797
_DIGITS_N_FEATURES = 64


@functools.lru_cache(maxsize=None)
def _load_digits_raw() -> np.ndarray:
    """Read the bundled digits table once and cache it (read-only).

    Returns
    -------
    numpy.ndarray of shape (1797, 65), dtype uint8
        The 64 pixel columns followed by the label column.
    """
    compressed = resources.files(__package__).joinpath(_DIGITS_FILE).read_bytes()
    raw = np.load(io.BytesIO(gzip.decompress(compressed)), allow_pickle=False)
    expected = (_DIGITS_N_SAMPLES, _DIGITS_N_FEATURES + 1)
    if raw.shape != expected or raw.dtype != np.uint8:
        raise RuntimeError(
            f"corrupt {_DIGITS_FILE}: got shape {raw.shape} dtype {raw.dtype}, "
            f"expected shape {expected} dtype uint8"
        )
    raw.setflags(write=False)
    return raw


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Load the UCI optical recognition of handwritten digits data set.

    This is the 8x8 version with 1,797 samples: the test set of the UCI
    "Optical Recognition of Handwritten Digits" data set, identical to the
    copy that scikit-learn distributes (``sklearn.datasets.load_digits``).
    Each sample is a 32x32 bitmap of a handwritten digit, divided into
    non-overlapping 4x4 blocks in which the "on" pixels are counted, giving
    an 8x8 image of integers in the range 0..16. The images are flattened
    row by row into 64 features.

    Returns
    -------
    X : numpy.ndarray of shape (1797, 64), dtype float64
        Pixel counts, each an integer value in 0..16. Feature ``8 * i + j``
        is the pixel in row ``i``, column ``j`` of the 8x8 image.
    y : numpy.ndarray of shape (1797,), dtype int64
        Digit class labels, 0..9. All ten classes are present (174 to 183
        samples each).

    Notes
    -----
    Source: UCI Machine Learning Repository, "Optical Recognition of
    Handwritten Digits", E. Alpaydin and C. Kaynak, 1998,
    https://doi.org/10.24432/C50P49.

    License: Creative Commons Attribution 4.0 International (CC BY 4.0),
    https://creativecommons.org/licenses/by/4.0/. If you use the data,
    cite it; the citation text is in :data:`DIGITS_CITATION`.

    The data are stored in the package as a gzip-compressed uint8 ``.npy``
    file and decompressed once per process. Every call returns new arrays,
    so modifying the returned arrays does not affect later calls.

    References
    ----------
    .. [1] Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of
       Handwritten Digits [Dataset]. UCI Machine Learning Repository.
       https://doi.org/10.24432/C50P49
    .. [2] Alpaydin, E. and Kaynak, C. (1998). Cascading Classifiers.
       Kybernetika, 34(4), 369-374.

    Examples
    --------
    >>> from fastprop.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, y.shape
    ((1797, 64), (1797,))
    >>> X.dtype, y.dtype
    (dtype('float64'), dtype('int64'))
    """
    raw = _load_digits_raw()
    X = raw[:, :_DIGITS_N_FEATURES].astype(np.float64, order="C")
    y = raw[:, _DIGITS_N_FEATURES].astype(np.int64, order="C")
    return X, y
