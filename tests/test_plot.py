"""fastprop.plot: each picture holds its expected labels, is a matplotlib Figure, and writes a
valid image whole or not at all; a missing matplotlib names the extra; python -m fastprop
explain writes everything."""
import os
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import fastprop as fp  # noqa: E402
from fastprop import plot  # noqa: E402
from fastprop.__main__ import main  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _texts(fig):
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0                       # not a blank image


def _trace(n_hidden=2, width=8, act="relu", n=16, dropout=True):
    rng = np.random.default_rng(0)
    layers = [fp.Dense(4, width, activation=act, seed=0)]
    if dropout:
        layers.append(fp.Dropout(0.2))
    for i in range(n_hidden - 1):
        layers.append(fp.Dense(width, width, activation=act, seed=i + 1))
    layers.append(fp.Dense(width, 3, activation="softmax", seed=99))
    model = fp.Sequential(layers, dtype="float64", seed=0)
    X = rng.standard_normal((n, 4))
    return fp.trace(model, X, np.arange(n) % 3)


def test_plot_blocks_labels_and_png(tmp_path):
    tr = _trace()                                   # Dense, Dropout, Dense, Dense
    fig = tr.plot_blocks()
    assert isinstance(fig, Figure)
    text = _texts(fig)
    for label in ("input", "Dense [1]  relu", "Dropout [2]  rate 0.2", "Dense [4]  softmax",
                  "W[1] (4, 8)  b[1] (8,)", "z[3] = a[2] W[3] + b[3]", "a[1] = relu(z[1])",
                  "backward [3]", "dW[3] = a[2]^T dz[3]", "da[2] = dz[3] W[3]^T",
                  "cross_entropy", "cache", "update"):
        assert label in text, label
    # the arrows: a[l] forward and da[l] backward, each with its shape and norm
    for l, arr in ((1, tr.layers[0].a), (2, tr.layers[1].a)):
        assert f"a[{l}]\n(16, 8)\n|.|={np.linalg.norm(arr):.3g}" in text
    assert f"da[2]\n(16, 8)\n|.|={np.linalg.norm(tr.layers[2].da_prev):.3g}" in text
    assert f"dz[4]\n(16, 3)" in text                # the fused loss gradient enters layer 4
    assert f"dW[3] |.|={np.linalg.norm(tr.layers[2].dW):.3g}" in text
    path = tmp_path / "blocks.png"
    assert tr.plot_blocks(path) is not None
    _check_png(path)
    svg = tmp_path / "blocks.svg"
    tr.plot_blocks(str(svg))
    assert b"<svg" in svg.read_bytes()[:400]


def test_plot_blocks_arrow_width_follows_the_norm():
    """A vanishing gradient (deep sigmoid net) gives thinner backward arrows near the input."""
    tr = _trace(n_hidden=6, width=6, act="sigmoid", dropout=False)
    fig = tr.plot_blocks()
    orange = matplotlib.colors.to_rgba(plot.BACKWARD)
    widths = [p.get_linewidth() for p in fig.findobj(FancyArrowPatch)
              if p.get_edgecolor() == orange]
    assert max(widths) > 5 * min(widths)


def test_plot_blocks_folds_long_models():
    tr = _trace(n_hidden=11, width=5, dropout=False)   # 12 Dense layers
    text = _texts(tr.plot_blocks())
    assert "layers 5-9" in text and "(5 folded)" in text
    assert "Dense [4]" in text and "Dense [10]" in text and "Dense [12]" in text
    assert "Dense [6]" not in text
    assert "a[9]" in text and "da[9]" in text       # the arrows leaving the fold


def test_plot_trace_graph(tmp_path):
    tr = _trace(width=4, n=5)
    fig = tr.plot_graph(sample=2)
    assert isinstance(fig, Figure)
    text = _texts(fig)
    for label in ("a[0] = x", "W[1] 4x4", "b[1]", "@", "+", "relu", "z[1]", "a[3]", "drop",
                  "loss", "L (cross_entropy)", "y (target)", "class 2", "sample 2 of 5"):
        assert label in text, label
    # narrow layers show their units: z[1] of sample 2, and its gradient dz[1]
    t = tr.layers[0]
    assert "[" + " ".join(f"{v:.2g}" for v in t.z[2]) + "]" in text
    assert "grad [" + " ".join(f"{v:.2g}" for v in t.dz[2]) + "]" in text
    # wide layers are summarized as vectors
    wide = _trace(width=16, n=3)
    assert f"|.|={np.linalg.norm(wide.layers[0].z[0]):.3g}" in _texts(wide.plot_graph())
    path = tmp_path / "graph.png"
    tr.plot_graph(path, sample=4)
    _check_png(path)


def _norm_trace(n=6):
    """Dense, BatchNorm, Activation, Dense, LayerNorm, Dense (identity), Activation(softmax)."""
    rng = np.random.default_rng(1)
    model = fp.Sequential([fp.Dense(4, 5, seed=0), fp.BatchNorm(), fp.Activation("relu"),
                           fp.Dense(5, 4, seed=1), fp.LayerNorm(), fp.Dense(4, 3, seed=2),
                           fp.Activation("softmax")], dtype="float64", seed=0)
    X, y = rng.standard_normal((n, 4)), np.arange(n) % 3
    model.train_step(X, y)
    return fp.trace(model, X, y)


def test_plot_blocks_new_kinds(tmp_path):
    tr = _norm_trace()
    text = _texts(tr.plot_blocks())
    for label in ("BatchNorm [2]  eps 1e-05", "gamma, beta (5,)", "running mean, var (5,)",
                  "inference: running stats", "x_hat[2] = (a[1] - mean) / std",
                  "a[2] = gamma x_hat[2] + beta", "dgamma[2] = sum da[2] * x_hat[2]",
                  "da[1] = da[2] gamma / std", "cache\nx_hat[2], 1/std",
                  "Activation [3]  relu", "a[3] = relu(z[3])", "dz[3] = da[3] * relu'(z[3])",
                  "da[2] = dz[3]", "LayerNorm [5]  eps 1e-05", "mean, var per row (6,)",
                  "Activation [7]  softmax", "dz[7] = (p - y)/n  (the loss)",
                  "gamma, beta likewise"):
        assert label in text, label
    t = tr.layers[1]
    assert f"dgamma[2] |.|={np.linalg.norm(t.dgamma):.3g}" in text
    assert f"a[2]\n(6, 5)\n|.|={np.linalg.norm(t.a):.3g}" in text
    assert f"da[4]\n(6, 4)\n|.|={np.linalg.norm(tr.layers[4].da_prev):.3g}" in text
    assert "dz[7]\n(6, 3)" in text            # the fused loss gradient enters layer 7
    path = tmp_path / "blocks.png"
    tr.plot_blocks(path)
    _check_png(path)


def test_plot_trace_graph_new_kinds(tmp_path):
    tr = _norm_trace()
    text = _texts(tr.plot_graph(sample=3))
    for label in ("norm", "aff", "relu", "smax", "x_hat[2]  R^5", "mean, var[2] (running)",
                  "mean, var[5] (row 3)", "gamma, beta[5]  R^4", "a[7]  R^3",
                  "none (constants)"):
        assert label in text, label
    bn, ln = tr.layers[1], tr.layers[4]
    assert "[" + " ".join(f"{v:.2g}" for v in bn.x_hat[3]) + "]" in text
    assert f"mean={ln.mean[3]:.3g} var={ln.var[3]:.3g}" in text
    assert f"|dg|={np.linalg.norm(bn.dgamma):.3g}" in text
    path = tmp_path / "graph.png"
    tr.plot_graph(path, sample=5)
    _check_png(path)


@pytest.mark.parametrize("sample, kind", [(5, ValueError), (-1, ValueError),
                                          (1.0, TypeError), ("0", TypeError),
                                          (True, TypeError)])
def test_plot_trace_graph_bad_sample(sample, kind):
    tr = _trace(width=4, n=5)
    with pytest.raises(kind, match="sample"):
        tr.plot_graph(sample=sample)


def test_plot_graph_scalar_expression(tmp_path):
    fig = fp.plot_graph()
    text = _texts(fig)
    # L = (a + b) * c with a=2, b=-3, c=10: d=-1, L=-10; dL/da = dL/db = c, dL/dc = d
    for label in ("L = (a + b) * c", "d = a + b", "L = d * c", "-10", "grad 10", "grad -1",
                  "grad 1"):
        assert label in text, label
    text = _texts(fp.plot_graph(a=1.5, b=0.5, c=-4))
    assert "-8" in text and "grad -4" in text and "grad 2" in text
    path = tmp_path / "scalar.png"
    fp.plot_graph(path)
    _check_png(path)
    with pytest.raises(TypeError, match="a must be a real number"):
        fp.plot_graph(a="2")
    with pytest.raises(ValueError, match="c must be finite"):
        fp.plot_graph(c=np.inf)


def _history():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = (X[:, 0] > 0).astype(int)
    model = fp.Sequential([fp.Dense(4, 2, activation="softmax", seed=0)], seed=0)
    return model.fit(X, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)


def test_plot_history(tmp_path):
    history = _history()
    fig = fp.plot_history(history)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    text = _texts(fig)
    for label in ("loss", "val_loss", "accuracy", "val_accuracy", "epoch"):
        assert label in text, label
    assert "lr" not in [ax.get_title() for ax in fig.axes]
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), history.history["loss"])
    only = fp.plot_history(history.history, metrics=["loss"])
    assert len(only.axes) == 1
    path = tmp_path / "h.png"
    fp.plot_history(history, path)
    _check_png(path)
    with pytest.raises(ValueError, match="not logged"):
        fp.plot_history(history, metrics=["f1"])
    with pytest.raises(TypeError, match="metrics"):
        fp.plot_history(history, metrics="loss")
    with pytest.raises(TypeError, match="history"):
        fp.plot_history([1, 2, 3])
    with pytest.raises(ValueError, match="no epochs"):
        fp.plot_history({})


def test_demo_plot_uses_plot_history(tmp_path, capsys, monkeypatch):
    calls = []
    real = fp.plot_history

    def recording(history, path=None, metrics=None):
        calls.append((history, path))
        return real(history, path, metrics)

    monkeypatch.setattr(fp, "plot_history", recording)
    path = tmp_path / "curves.png"
    assert main(["demo", "--epochs", "2", "--no-reference", "--plot", str(path)]) == 0
    _check_png(path)
    assert len(calls) == 1 and calls[0][1] == str(path)
    assert len(calls[0][0].history["loss"]) == 2
    assert "learning curves saved" in capsys.readouterr().out


def test_bad_paths_write_nothing(tmp_path, monkeypatch):
    tr = _trace()
    missing = tmp_path / "no" / "such" / "dir" / "x.png"
    for draw in (tr.plot_blocks, tr.plot_graph, fp.plot_graph,
                 lambda p: fp.plot_history(_history(), p)):
        with pytest.raises(ValueError, match="does not exist"):
            draw(missing)
        with pytest.raises(ValueError, match="must end in"):
            draw(tmp_path / "x.txt")
        with pytest.raises(TypeError, match="path"):
            draw(3.5)
    assert not (tmp_path / "no").exists() and list(tmp_path.iterdir()) == []

    # a failure while writing leaves neither a partial file nor a temporary one, and an
    # existing file untouched
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")

    def broken(self, f, **kwargs):
        f.write(b"\x89PNG partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tr.plot_blocks(target)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]


def test_missing_matplotlib_names_the_extra(monkeypatch):
    tr = _trace()
    history = _history()
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for draw in (tr.plot_blocks, tr.plot_graph, fp.plot_graph,
                 lambda: fp.plot_history(history)):
        with pytest.raises(ImportError, match=r"pip install 'fastprop\[plot\]'"):
            draw()


def test_explain_end_to_end(tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["explain", "--out", str(out), "--epochs", "1", "--batch-size", "16"]) == 0
    text = capsys.readouterr().out
    assert "Trace: 3 layers, batch of 16" in text
    assert "dW[1]" in text and "|lr*dW|/|W|" in text
    names = sorted(os.listdir(out))
    assert names == sorted(f"{n}.{e}" for n in ("blocks", "graph", "history", "scalar_graph")
                           for e in ("png", "svg"))
    for name in names:
        if name.endswith(".png"):
            _check_png(out / name)
        else:
            assert b"<svg" in (out / name).read_bytes()[:400]
