"""Regenerate the seed corpus of tests/test_io_fuzz.py: ``python tests/fuzz_corpus/make_load_corpus.py``.

Writes ``load/*.fpz``: valid model files (``valid_*``: both dtypes, every optimizer, dropout,
untrained, a deflated archive, a wide single layer) and crafted invalid ones (``bad_*``: each
a kind of damage the loader must turn into ValueError). The fuzz target mutates all of them.
Files are small (a few KB) so that mutations reach every part of the format.
"""
import io
import json
import os
import sys
import zipfile

import numpy as np

import fastprop as fp

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load")


def trained(layers, optimizer, dtype, steps=2, seed=0):
    model = fp.Sequential(layers, optimizer=optimizer, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    n_in, n_out = model.layers[0].n_in, model.layers[-1].n_out
    X = rng.standard_normal((16, n_in))
    if model.loss == "cross_entropy":
        y = rng.integers(0, n_out, 16)
    elif model.loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (16, n_out))
    else:
        y = rng.standard_normal((16, n_out))
    for _ in range(steps):
        model.train_step(X, y)
    return model


# -- helpers shared with tests/test_io_fuzz.py and tests/test_io_safety.py ------------------
def members(data):
    """The members of the model file ``data``: {name: raw bytes}."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def archive(parts, compression=zipfile.ZIP_STORED):
    """A ZIP (valid CRCs) of ``parts``: {name: raw bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, raw in parts.items():  # a fixed date, as numpy.savez: reproducible bytes
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), raw,
                        compress_type=compression)
    return buf.getvalue()


def npy(arr):
    """``arr`` as the bytes of a ``.npy`` file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def header_of(parts):
    """The decoded JSON header of a model file's ``parts``."""
    return json.loads(np.load(io.BytesIO(parts["header.npy"])).tobytes())


def with_header(data, edit=None, text=None):
    """``data`` (a model file) with its header edited by ``edit(dict)`` or replaced by
    ``text``, re-packed with valid CRCs."""
    parts = members(data)
    if text is None:
        h = header_of(parts)
        edit(h)
        text = json.dumps(h)
    parts["header.npy"] = npy(np.frombuffer(text.encode(), dtype=np.uint8))
    return archive(parts)


def main():
    os.makedirs(HERE, exist_ok=True)
    D = fp.Dense
    valid = {
        "valid_adam_f32": trained([D(4, 6, activation="relu", seed=1), fp.Dropout(0.25),
                                   D(6, 3, activation="softmax", seed=2)],
                                  fp.optim.Adam(lr=1e-2), "float32"),
        "valid_sgd_f64": trained([D(3, 4, activation="tanh", seed=3),
                                  D(4, 2, activation="linear", seed=4)],
                                 fp.optim.SGD(lr=0.1), "float64"),
        "valid_momentum_f32": trained([D(5, 3, activation="sigmoid", seed=5)],
                                      fp.optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
                                      "float32"),
        "valid_rmsprop_f64": trained([D(2, 5, activation="gelu", seed=6),
                                      D(5, 2, activation="softmax", seed=7)],
                                     fp.optim.RMSprop(lr=1e-2, centered=True), "float64"),
        "valid_adamw_amsgrad_f32": trained(
            [D(3, 3, activation="silu", seed=8), D(3, 2, activation="softmax", seed=9)],
            fp.optim.AdamW(lr=1e-2, amsgrad=True, schedule=fp.optim.StepLR(2, gamma=0.5)),
            "float32"),
        "valid_adagrad_f64": trained([D(4, 2, activation="softmax", seed=10)],
                                     fp.optim.Adagrad(lr=1e-2), "float64"),
        "valid_untrained_f32": trained([D(4, 4, activation="relu", seed=11), fp.Dropout(0.5),
                                        D(4, 3, activation="softmax", seed=12)],
                                       fp.optim.Adam(), "float32", steps=0),
        "valid_wide_f64": trained([D(1, 40, activation="relu", seed=13),
                                   D(40, 1, activation="linear", seed=14)],
                                  fp.optim.Adam(lr=1e-3), "float64"),
    }
    files = {name: m.to_bytes() for name, m in valid.items()}
    base = files["valid_adam_f32"]
    files["valid_deflated_f32"] = archive(members(base), zipfile.ZIP_DEFLATED)

    parts = members(base)
    bad = {
        "bad_truncated": base[: len(base) // 2],
        "bad_huge_dense": with_header(base, lambda h: h["config"]["layers"][0].update(
            n_in=12000, n_out=12000)),
        "bad_deep_json": with_header(base, text='{"a":' + "[" * 2000 + "]" * 2000 + "}"),
        "bad_t_overflow": with_header(base, lambda h: h.update(t=2**63 - 1)),
        "bad_n_params": with_header(base, lambda h: h.update(n_params=10**12)),
        "bad_params_dtype": archive({**parts, "params.npy": npy(
            np.load(io.BytesIO(parts["params.npy"])).astype(np.float64))}),
        "bad_params_shape": archive({**parts, "params.npy": npy(
            np.load(io.BytesIO(parts["params.npy"]))[:-1])}),
        "bad_nan_params": archive({**parts, "params.npy": npy(
            np.full_like(np.load(io.BytesIO(parts["params.npy"])), np.nan))}),
        "bad_missing_rng": archive({k: v for k, v in parts.items() if k != "rng.npy"}),
        "bad_header_not_object": with_header(base, text="[1, 2, 3]"),
        "bad_config_unknown_layer": with_header(base, lambda h: h["config"]["layers"].append(
            {"type": "Conv2d", "n_in": 3})),
    }
    files.update(bad)
    for name, data in files.items():
        with open(os.path.join(HERE, name + ".fpz"), "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
