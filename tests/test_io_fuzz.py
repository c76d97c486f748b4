"""Fuzz target for the model-file loader (issue 9): mutated model files either load as a
complete, finite model or raise ValueError -- never another exception, a crash, a hang or an
unbounded allocation.

Seeds: ``tests/fuzz_corpus/load/*.fpz`` (``valid_*`` load, ``bad_*`` are crafted damage;
``make_load_corpus.py`` there regenerates them). Mutations: truncations, byte flips and
splices of the raw file; edits of the header's JSON (any field set to any JSON value,
deleted, added) in a re-packed archive whose CRCs are valid, so that the mutation reaches the
checks behind them; members replaced by arrays of other dtypes and shapes. Bounded in time:
``FASTPROP_FUZZ_EXAMPLES`` examples per target (default 250, more for the cheap targets; ~20-40 s in all).
"""
import contextlib
import copy
import glob
import hashlib
import io
import json
import os
from unittest import mock

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastprop as fp  # noqa: E402
from fastprop.model import Sequential  # noqa: E402
from fuzz_corpus.make_load_corpus import archive, header_of, members, npy  # noqa: E402

CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_corpus", "load")
CORPUS = {os.path.basename(p): open(p, "rb").read()
          for p in sorted(glob.glob(os.path.join(CORPUS_DIR, "*.fpz")))}
VALID = sorted(n for n in CORPUS if n.startswith("valid_"))
EXAMPLES = int(os.environ.get("FASTPROP_FUZZ_EXAMPLES", "250"))

fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@contextlib.contextmanager
def layers_bounded_by(nbytes):
    """Fail if a Dense layer is built whose weights could not fit in ``nbytes`` of file:
    the loader must check the header's widths against its arrays before building."""
    real_init = fp.Dense.__init__

    def init(self, n_in, n_out, *args, **kwargs):
        if isinstance(n_in, int) and isinstance(n_out, int):
            assert n_in * n_out * 4 <= nbytes, f"built Dense({n_in}, {n_out}) from {nbytes} B"
        real_init(self, n_in, n_out, *args, **kwargs)
    with mock.patch.object(fp.Dense, "__init__", init):
        yield


def outcome(data):
    """Load ``data`` two ways; assert the outcome is a valid model or ValueError, the same
    both ways. Returns the model or None."""
    try:
        with layers_bounded_by(len(data)):
            model = fp.from_bytes(data)
    except ValueError as exc:
        assert str(exc).startswith("cannot load model from bytes"), exc
        with pytest.raises(ValueError):
            fp.load(io.BytesIO(data))
        return None
    assert isinstance(model, Sequential)
    assert np.isfinite(model.params).all()
    state, t = model.optimizer.get_state()
    assert all(np.isfinite(a).all() for a in state.values()) and 0 <= t <= 2**53
    out = model.predict(np.zeros((2, model.layers[0].n_in)))
    assert out.shape == (2, model.layers[-1].n_out)
    np.testing.assert_array_equal(fp.load(io.BytesIO(data)).params, model.params)
    return model


def test_corpus_is_present_and_as_labelled():
    assert len(VALID) >= 8 and len(CORPUS) - len(VALID) >= 10, sorted(CORPUS)
    for name, data in CORPUS.items():
        model = outcome(data)
        assert (model is not None) == name.startswith("valid_"), name


# -- raw byte mutations -----------------------------------------------------------------------
seeds = st.sampled_from(sorted(CORPUS))


@settings(fuzz, max_examples=2 * EXAMPLES)
@given(name=seeds, cut=st.floats(0, 1, exclude_max=True))
def test_truncations(name, cut):
    data = CORPUS[name]
    outcome(data[:int(cut * len(data))])


@settings(fuzz, max_examples=4 * EXAMPLES)
@given(name=seeds, flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                            st.integers(1, 255)), min_size=1, max_size=8),
       splice=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.binary(max_size=64))))
def test_byte_flips_and_splices(name, flips, splice):
    data = bytearray(CORPUS[name])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if splice is not None:
        at = int(splice[0] * len(data))
        data[at:at] = splice[1]
    outcome(bytes(data))


# -- header JSON mutations in a well-formed archive ------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from([0, 1, -1, 2, 3, 51, 2**31, 2**53, 2**63 - 1,
                                                 2**64, -2**63, 10**100])
    | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "float32", "float64", "uint64", "Dense", "Dropout", "relu",
                       "softmax", "mse", "cross_entropy", "adam", "sgd", "fastprop-model",
                       "0" * 64])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


def _paths(obj, prefix=()):
    """Every path (tuple of keys / indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


BOUNDARY_INTS = [0, 1, -1, 2**31 - 1, 2**32, 2**53, 2**53 + 1, 2**62, 2**63 - 1, 2**63,
                 2**64, -2**63, 10**100]


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _near(value):
    """Values of the same type as ``value``, near it or at the type's boundaries."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.sampled_from(BOUNDARY_INTS + [value - 1, value + 1, -value, value * 1000,
                                                value // 2])
    if isinstance(value, float):
        return st.sampled_from([0.0, -0.0, 1.0, -value, value * 1e300, 5e-324, 1.5])
    if isinstance(value, str):
        return st.sampled_from([value[:-1], value + "x", value.upper(), "", "float16",
                                "float64", "float32", "uint64", "Dense", "Dropout", "0" * 64])
    if isinstance(value, list):
        return st.sampled_from([value[:-1], value + value, [value], value[::-1]])
    if isinstance(value, dict):
        return st.sampled_from([{}, {k: value[k] for k in list(value)[:-1]}, [value]])
    return st.none()


def _apply(header, path, op, value, key):
    if not path:
        return value if op == "set" else header
    parent = header
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "set":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif op == "add" and isinstance(parent[last], list):
        parent[last].append(value)
    elif op == "scale" and isinstance(parent[last], int) and not isinstance(parent[last], bool):
        parent[last] = parent[last] * 1000 + 1
    return header


@settings(fuzz, max_examples=2 * EXAMPLES)
@given(name=st.sampled_from(VALID), data=st.data())
def test_header_json_mutations(name, data):
    parts = members(CORPUS[name])
    header = header_of(parts)
    for _ in range(data.draw(st.integers(1, 3), label="n_edits")):
        paths = list(_paths(header))
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(st.sampled_from(["set", "set", "delete", "add", "scale"]), label="op")
        value = copy.deepcopy(data.draw(_near(_get(header, path)) | json_values,
                                        label="value"))  # no cycles when added under itself
        key = data.draw(st.sampled_from(["n_in", "n_out", "type", "rate", "x", "shape"]),
                        label="key")
        if op == "delete" and not path:
            continue
        header = _apply(header, path, op, value, key)
    text = json.dumps(header)
    parts["header.npy"] = npy(np.frombuffer(text.encode(), dtype=np.uint8))
    outcome(archive(parts))


# -- wrong shapes and dtypes --------------------------------------------------------------------
dtypes = st.sampled_from(["<f4", "<f8", ">f4", ">f8", "<f2", "<u8", "<i8", "<i4", "|u1", "|b1",
                          "<c16", "<U4", "|S3"])


@fuzz
@given(name=st.sampled_from(VALID), data=st.data())
def test_members_of_other_dtypes_and_shapes(name, data):
    parts = members(CORPUS[name])
    target = data.draw(st.sampled_from(sorted(parts)), label="member")
    kind = data.draw(st.sampled_from(["dtype", "shape", "both", "fortran", "header_sync"]),
                     label="kind")
    arr = np.load(io.BytesIO(parts[target]))
    if kind in ("dtype", "both"):
        arr = np.zeros(arr.shape, dtype=data.draw(dtypes, label="dtype"))
    if kind in ("shape", "both"):
        shape = data.draw(st.lists(st.integers(0, 70), max_size=3), label="shape")
        arr = np.resize(arr, shape)
    if kind == "fortran":
        arr = np.asfortranarray(np.resize(arr, (2, max(arr.size // 2, 1))))
    parts[target] = npy(arr)
    if kind == "header_sync" and target != "header.npy":
        # a different but self-consistent member: header shape and checksum updated to match
        new = np.resize(arr, data.draw(st.integers(0, 70), label="size"))
        parts[target] = npy(new)
        header = header_of(parts)
        spec = header["arrays"][target[:-4]]
        spec["shape"] = list(new.shape)
        spec["sha256"] = hashlib.sha256(np.ascontiguousarray(new).tobytes()).hexdigest()
        if target == "params.npy":
            header["n_params"] = int(new.size)
        parts["header.npy"] = npy(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    outcome(archive(parts))
