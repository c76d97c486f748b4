"""Pictures of forward and backward propagation, and learning curves (matplotlib only).

Needs the optional extra ``pip install fastprop[plot]`` (matplotlib); without it every function
here raises an ImportError saying so. Figures are built as :class:`matplotlib.figure.Figure`
objects without pyplot (no GUI backend is touched) and returned; with ``path`` they are also
written there, whole or not at all (through a temporary file in the same directory).

- :func:`plot_graph`: a tiny scalar expression ``L = (a + b) * c``, its computational graph with
  the forward value and the gradient of every node: the first picture of backpropagation.
- :meth:`fastprop.trace.Trace.plot_blocks` / :func:`plot_blocks`: the textbook's block picture
  of a traced pass.
- :meth:`fastprop.trace.Trace.plot_graph` / :func:`plot_trace_graph`: the computational graph of
  one sample of a traced pass.
- :func:`plot_history`: learning curves of a ``History`` (what ``python -m fastprop demo --plot``
  draws).

Colours: forward values in blue, backward gradients in orange, everywhere.
"""
import numbers
import os

import numpy as np

from fastprop._files import atomic_target, atomic_write

__all__ = ["plot_graph", "plot_history", "plot_blocks", "plot_trace_graph", "FORWARD",
           "BACKWARD"]

FORWARD = "#1f5fbf"      # forward signal
BACKWARD = "#d95f02"     # backward gradient
_GREY = "#555555"
MAX_BLOCKS = 8           # more layers than this: the middle ones are folded


# -- matplotlib and files ------------------------------------------------------------------------
def _figure(width, height):
    """A new Figure (no pyplot); ImportError naming the extra without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("fastprop's plots need matplotlib, which is not installed: "
                          "pip install 'fastprop[plot]' (or pip install matplotlib)") from None
    return Figure(figsize=(width, height), dpi=100)


def _check_path(path):
    """``path`` as a str whose directory exists and whose suffix names an image format."""
    if path is None:
        return None
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: the directory {directory!r} does not exist")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in ("png", "svg", "pdf", "jpg", "jpeg"):
        raise ValueError(f"path {path!r} must end in .png, .svg, .pdf or .jpg (the format)")
    return path


def _save(fig, path):
    """Write ``fig`` to ``path`` whole or not at all (a temporary file in the same directory,
    then renamed); return ``fig``. Files carry no date or version, so regenerating them gives
    the same bytes."""
    if path is None:
        return fig
    import matplotlib
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}.get(ext)

    def write(f):
        with matplotlib.rc_context({"svg.hashsalt": "fastprop"}):
            fig.savefig(f, format=ext, metadata=metadata)
    atomic_write(atomic_target(path, "figure"), write, path, "figure")
    return fig


def _canvas_axes(fig, width, height):
    """One axes over the whole figure, data units = inches from the bottom left."""
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return ax


# -- numbers as text -------------------------------------------------------------------------------
def _norm(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.linalg.norm(np.asarray(x, dtype=np.float64).ravel()))


def _g(v):
    return f"{v:.3g}"


def _shape(arr):
    return "(" + ", ".join(str(d) for d in arr.shape) + (",)" if arr.ndim == 1 else ")")


def _vector_text(v):
    """A short text for a 1-D vector: its values when it has at most 6, a summary otherwise."""
    v = np.asarray(v, dtype=np.float64).ravel()
    if v.size <= 6:
        return "[" + " ".join(f"{x:.2g}" for x in v) + "]"
    return f"|.|={_g(_norm(v))} mean={_g(v.mean())}"


def _widths(norms, low=0.6, high=6.0):
    """Arrow line widths proportional to the norms (the largest gets ``high``)."""
    norms = np.array([n if np.isfinite(n) else np.nan for n in norms], dtype=np.float64)
    top = np.nanmax(norms) if np.any(np.isfinite(norms)) else np.nan
    if not np.isfinite(top) or top <= 0:
        return [low] * len(norms)
    return [high if not np.isfinite(n) else max(low, high * n / top) for n in norms]


# -- drawing primitives ----------------------------------------------------------------------------
def _box(ax, x, y, w, h, lines, edge, face="white", fontsize=8.0, dashed=False):
    """A rounded box centred at (x, y) holding ``lines`` [(text, colour, bold), ...]."""
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                boxstyle="round,pad=0.02,rounding_size=0.06",
                                fc=face, ec=edge, lw=1.3, ls="--" if dashed else "-"))
    step = fontsize / 72 * 1.3
    top = y + step * (len(lines) - 1) / 2
    for i, (text, colour, bold) in enumerate(lines):
        ax.text(x, top - i * step, text, ha="center", va="center", fontsize=fontsize,
                color=colour, fontweight="bold" if bold else "normal")


def _arrow(ax, start, end, colour, width, dashed=False):
    from matplotlib.patches import FancyArrowPatch
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8 + 1.5 * width,
                                 lw=width, color=colour, ls="--" if dashed else "-",
                                 shrinkA=0, shrinkB=0))


def _legend(ax, x, y, extra=""):
    ax.text(x, y, "forward: values", color=FORWARD, fontsize=8, fontweight="bold", va="center")
    ax.text(x + 1.35, y, "backward: gradients dL/d(.)", color=BACKWARD, fontsize=8,
            fontweight="bold", va="center")
    if extra:
        ax.text(x + 3.55, y, extra, color=_GREY, fontsize=7, va="center")


# -- the computational graph (shared by the scalar example and a traced sample) --------------------
_VAL_W, _VAL_H, _OP_R = 1.7, 0.56, 0.2
_COL = {"value": 1.95, "op": 0.75}


def _draw_graph(rows, title, note=""):
    """Draw rows of nodes; each node a dict with ``kind`` ("value" / "op"), ``title`` (and for
    values ``fwd``, ``grad``), optionally ``param`` (a value node drawn above an op, feeding it).
    Nodes in a row are chained left to right; a row's last node feeds the next row's first."""
    width = max(0.3 + max(sum(_COL[n["kind"]] for n in row) for row in rows) + 0.2,
                4.0 + 0.07 * len(note), 0.6 + 0.1 * len(title))    # room for the title
    # each row: its parameter line (when an op of it has a parameter), its main line, and
    # below it the lane of the connector to the next row
    ys, cursor = [], -0.75
    for row in rows:
        cursor -= 0.8 if any(n.get("param") is not None for n in row) else 0.1
        ys.append(cursor - _VAL_H / 2)
        cursor -= _VAL_H + 0.3
    height = -cursor
    ys = [height + y for y in ys]
    fig = _figure(width, height)
    ax = _canvas_axes(fig, width, height)
    ax.text(0.2, height - 0.22, title, fontsize=9.5, fontweight="bold", va="center")
    _legend(ax, 0.2, height - 0.48, note)
    placed = []
    for r, row in enumerate(rows):
        y = ys[r]
        x = 0.3 + (_COL["value"] if r > 0 and row[0]["kind"] == "op" else 0)
        row_pos = []
        for node in row:
            cx = x + _COL[node["kind"]] / 2
            row_pos.append((cx, y, node))
            x += _COL[node["kind"]]
        placed.append(row_pos)
    for r, row_pos in enumerate(placed):
        for i, (cx, cy, node) in enumerate(row_pos):
            _node(ax, cx, cy, node)
            if node.get("param") is not None:
                px, py = cx, cy + 0.78
                _node(ax, px, py, node["param"])
                _arrow(ax, (px, py - _VAL_H / 2), (cx, cy + _OP_R), _GREY, 1.0)
            if i + 1 < len(row_pos):
                nx, _, nnode = row_pos[i + 1]
                _arrow(ax, (cx + _half(node), cy), (nx - _half(nnode), cy), _GREY, 1.0)
        if r + 1 < len(placed):
            cx, cy, node = row_pos[-1]
            nx, ny, nnode = placed[r + 1][0]
            mid = cy - _VAL_H / 2 - 0.15
            x0 = 0.3 + _COL["value"] / 2
            ax.plot([cx, cx, x0, x0], [cy - _VAL_H / 2, mid, mid, ny], color=_GREY, lw=1.0)
            _arrow(ax, (x0, ny), (nx - _half(nnode), ny), _GREY, 1.0)
    return fig


def _half(node):
    return _VAL_W / 2 if node["kind"] == "value" else _OP_R


def _node(ax, x, y, node):
    from matplotlib.patches import Circle
    if node["kind"] == "op":
        ax.add_patch(Circle((x, y), _OP_R, fc="#eeeeee", ec=_GREY, lw=1.0))
        ax.text(x, y, node["title"], ha="center", va="center", fontsize=7.5,
                fontweight="bold")
        return
    _box(ax, x, y, _VAL_W, _VAL_H,
         [(node["title"], "black", True), (node["fwd"], FORWARD, False),
          ("grad " + node["grad"], BACKWARD, False)],
         edge=_GREY, fontsize=6.5, dashed=node.get("dashed", False))


def _value(title, fwd, grad, dashed=False):
    return {"kind": "value", "title": title, "fwd": fwd, "grad": grad, "dashed": dashed}


def _op(symbol, param=None):
    return {"kind": "op", "title": symbol, "param": param}


def _real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def plot_graph(path=None, a=2.0, b=-3.0, c=10.0):
    """The computational graph of ``L = (a + b) * c`` with every forward value and gradient.

    Forward: ``d = a + b``, ``L = d * c``. Backward from ``dL/dL = 1``: ``dL/dc = d``,
    ``dL/dd = c``, and the sum passes the gradient on unchanged: ``dL/da = dL/db = c``.
    The same picture for a network is :meth:`fastprop.trace.Trace.plot_graph`.

    Parameters
    ----------
    path : str or path-like, optional
        Also write the figure there (.png, .svg, .pdf; the directory must exist).
    a, b, c : float
        The leaf values.

    Returns
    -------
    matplotlib.figure.Figure
    """
    a, b, c = _real(a, "a"), _real(b, "b"), _real(c, "c")
    path = _check_path(path)
    d = a + b
    L = d * c
    rows = [[_value("a", f"{a:g}", f"{c:g}"),
             _op("+", param=_value("b", f"{b:g}", f"{c:g}")),
             _value("d = a + b", f"{d:g}", f"{c:g}"),
             _op("*", param=_value("c", f"{c:g}", f"{d:g}")),
             _value("L = d * c", f"{L:g}", "1")]]
    fig = _draw_graph(rows, "L = (a + b) * c: values forward, gradients backward",
                      "chain rule: dL/da = dL/dd * dd/da")
    return _save(fig, path)


# -- a traced pass ---------------------------------------------------------------------------------
# the Trace class, registered by fastprop.trace at import (trace imports this module, never
# the reverse)
_TRACE_TYPES = []


def _check_trace(trace):
    if not isinstance(trace, tuple(_TRACE_TYPES)):
        raise TypeError(f"trace must be a fastprop Trace (from fastprop.trace), got "
                        f"{type(trace).__name__}")


def plot_trace_graph(trace, path=None, sample=0):
    """The computational graph of sample ``sample`` of a traced pass (see
    :meth:`fastprop.trace.Trace.plot_graph`)."""
    _check_trace(trace)
    if isinstance(sample, (bool, np.bool_)) or not isinstance(sample, numbers.Integral):
        raise TypeError(f"sample must be an integer, got {type(sample).__name__}")
    n = trace.n_samples
    if not 0 <= sample < n:
        raise ValueError(f"sample must be in [0, {n - 1}] (the batch has {n} samples), "
                         f"got {sample}")
    sample = int(sample)
    path = _check_path(path)
    s = sample
    first = trace.layers[0]
    rows = []
    row = [_value(f"a[0] = x  R^{first.a_prev.shape[1]}", _vector_text(first.a_prev[s]),
                  _vector_text(first.da_prev[s]))]
    for t in trace.layers:
        l = t.index
        width = t.a.shape[1]
        if t.kind == "Dense":
            W = _value(f"W[{l}] {t.W.shape[0]}x{t.W.shape[1]}", f"|W|={_g(_norm(t.W))}",
                       f"|dW|={_g(_norm(t.dW))} (batch)")
            b = _value(f"b[{l}]  R^{width}", f"|b|={_g(_norm(t.b))}",
                       f"|db|={_g(_norm(t.db))} (batch)")
            u = (t.z[s].astype(np.float64) - t.b.astype(np.float64))
            row += [_op("@", param=W),
                    _value(f"a[{l - 1}] W[{l}]  R^{width}", _vector_text(u),
                           _vector_text(t.dz[s])),
                    _op("+", param=b),
                    _value(f"z[{l}]  R^{width}", _vector_text(t.z[s]), _vector_text(t.dz[s])),
                    _op(_ACT_SYMBOL.get(t.layer.activation, t.layer.activation[:4])),
                    _value(f"a[{l}]  R^{width}", _vector_text(t.a[s]), _vector_text(t.da[s]))]
        elif t.kind == "Activation":
            act = t.layer.activation
            row += [_op(_ACT_SYMBOL.get(act, act[:4])),
                    _value(f"a[{l}]  R^{width}", _vector_text(t.a[s]), _vector_text(t.da[s]))]
        elif t.kind in ("BatchNorm", "LayerNorm"):
            if t.kind == "BatchNorm":     # per feature: the running statistics (inference)
                stats = _value(f"mean, var[{l}] (running)",
                               f"|mean|={_g(_norm(t.mean))} |var|={_g(_norm(t.var))}",
                               "none (constants)", dashed=True)
            else:                         # per row: this sample's
                stats = _value(f"mean, var[{l}] (row {s})",
                               f"mean={_g(float(t.mean[s]))} var={_g(float(t.var[s]))}",
                               f"inside da[{l - 1}]", dashed=True)
            gb = _value(f"gamma, beta[{l}]  R^{width}",
                        f"|g|={_g(_norm(t.gamma))} |b|={_g(_norm(t.beta))}",
                        f"|dg|={_g(_norm(t.dgamma))} |db|={_g(_norm(t.dbeta))}")
            dx_hat = t.da[s].astype(np.float64) * t.gamma.astype(np.float64)
            row += [_op("norm", param=stats),
                    _value(f"x_hat[{l}]  R^{width}", _vector_text(t.x_hat[s]),
                           _vector_text(dx_hat)),
                    _op("aff", param=gb),
                    _value(f"a[{l}]  R^{width}", _vector_text(t.a[s]), _vector_text(t.da[s]))]
        else:
            row += [_op("drop"),
                    _value(f"a[{l}]  R^{width} (identity)", _vector_text(t.a[s]),
                           _vector_text(t.da[s]))]
        rows.append(row)
        row = []
    if trace.labels is not None:
        target = f"class {int(trace.labels[s])}"
    else:
        target = _vector_text(trace.y[s])
    rows.append([_op("loss", param=_value("y (target)", target, "-")),
                 _value(f"L ({trace.loss_name})", f"batch mean {_g(trace.loss)}", "1")])
    L = trace.layers[-1].index
    note = (f"sample {s} of {trace.n_samples}; gradients are of the batch loss"
            + (f"; dz[{L}] fused: (p - y)/n" if trace.loss_name in
               ("cross_entropy", "binary_cross_entropy") else ""))
    fig = _draw_graph(rows, "Computational graph of one sample (matmul @, add bias +, "
                            "activation, loss)", note)
    return _save(fig, path)


_ACT_SYMBOL = {"identity": "id", "relu": "relu", "leaky_relu": "lrelu", "sigmoid": "sig",
               "softmax": "smax", "softplus": "splus"}


def _columns(trace):
    """Columns of the block picture: ("input",), ("layer", t), ("fold", [t...]), ("loss",)."""
    layers = trace.layers
    cols = [("input", None)]
    if len(layers) > MAX_BLOCKS:
        head, tail = MAX_BLOCKS // 2, MAX_BLOCKS - MAX_BLOCKS // 2 - 1
        cols += [("layer", t) for t in layers[:head]]
        cols.append(("fold", layers[head:len(layers) - tail]))
        cols += [("layer", t) for t in layers[len(layers) - tail:]]
    else:
        cols += [("layer", t) for t in layers]
    return cols + [("loss", None)]


def _out_index(col):
    kind, what = col
    return 0 if kind == "input" else (what[-1].index if kind == "fold" else what.index)


_COLW = {"input": 1.3, "layer": 2.35, "fold": 1.3, "loss": 1.45}
_GAP = 0.85          # room for the arrow labels between boxes


def plot_blocks(trace, path=None):
    """The block picture of a traced pass (see :meth:`fastprop.trace.Trace.plot_blocks`)."""
    _check_trace(trace)
    path = _check_path(path)
    layers = trace.layers
    cols = _columns(trace)
    xs, x = [], 0.25
    for kind, _ in cols:
        w = _COLW[kind]
        xs.append(x + w / 2)
        x += w + _GAP
    width = max(x - _GAP + 0.25, 10.5)      # room for the title on small models
    height = 6.0
    yf, yb, yu = 4.1, 1.85, 0.42      # forward row, backward row, update strip
    bh = 1.25
    fig = _figure(width, height)
    ax = _canvas_axes(fig, width, height)
    fused = trace.loss_name in ("cross_entropy", "binary_cross_entropy")
    L = layers[-1].index
    ax.text(0.25, height - 0.25, f"Forward and backward propagation of one batch "
            f"({trace.n_samples} samples, {trace.dtype.name}): layer l computes "
            f"z[l] = a[l-1] W[l] + b[l], a[l] = g(z[l])", fontsize=9.5, fontweight="bold",
            va="center")
    _legend(ax, 0.25, height - 0.55, "arrow width ~ norm (per direction); "
            "|.| = Frobenius norm over the batch")

    # forward signals a[l] and backward gradients da[l] on the arrows between columns
    fwd_arrays, bwd_arrays, bwd_names = [], [], []
    for j in range(len(cols) - 1):
        l = _out_index(cols[j])
        fwd_arrays.append(layers[0].a_prev if l == 0 else layers[l - 1].a)
        if cols[j + 1][0] == "loss":
            bwd_arrays.append(layers[-1].dz if fused else layers[-1].da)
            bwd_names.append(f"dz[{L}]" if fused else f"da[{L}]")
        else:
            bwd_arrays.append(layers[l].da_prev)
            bwd_names.append(f"da[{l}]")
    fwd_w = _widths([_norm(a) for a in fwd_arrays])
    bwd_w = _widths([_norm(a) for a in bwd_arrays])
    for j in range(len(cols) - 1):
        l = _out_index(cols[j])
        x0 = xs[j] + _COLW[cols[j][0]] / 2
        x1 = xs[j + 1] - _COLW[cols[j + 1][0]] / 2
        xm = (x0 + x1) / 2
        a = fwd_arrays[j]
        _arrow(ax, (x0, yf), (x1, yf), FORWARD, fwd_w[j])
        ax.text(xm, yf + 0.1, f"a[{l}]\n{_shape(a)}\n|.|={_g(_norm(a))}", ha="center",
                va="bottom", fontsize=7.5, color=FORWARD, linespacing=1.1)
        d = bwd_arrays[j]
        _arrow(ax, (x1, yb), (x0, yb), BACKWARD, bwd_w[j])
        ax.text(xm, yb - 0.12, f"{bwd_names[j]}\n{_shape(d)}\n|.|={_g(_norm(d))}",
                ha="center", va="top", fontsize=7.5, color=BACKWARD, linespacing=1.1)

    for (kind, what), xc in zip(cols, xs):
        w = _COLW[kind]
        if kind == "input":
            _box(ax, xc, yf, w, bh, [("input", "black", True), ("a[0] = X", FORWARD, False),
                                     (_shape(layers[0].a_prev), FORWARD, False)], FORWARD)
            _box(ax, xc, yb, w, bh, [("da[0]", BACKWARD, True),
                                     ("(not needed:", _GREY, False),
                                     ("X is data)", _GREY, False)], BACKWARD, dashed=True)
        elif kind == "fold":
            first, last = what[0].index, what[-1].index
            for y, colour in ((yf, FORWARD), (yb, BACKWARD)):
                _box(ax, xc, y, w, bh, [("...", "black", True),
                                        (f"layers {first}-{last}", colour, False),
                                        (f"({len(what)} folded)", _GREY, False)], colour,
                     dashed=True)
        elif kind == "loss":
            lines = [("loss", "black", True), (trace.loss_name, "black", False),
                     (f"L = {_g(trace.loss)}", FORWARD, False), ("dL/dL = 1", BACKWARD, False)]
            if fused:
                lines.append((f"fused with g[{L}]", _GREY, False))
            _box(ax, xc, (yf + yb) / 2, w, yf - yb + bh, lines, "black", face="#f6f6f6")
        else:
            _layer_boxes(ax, what, xc, w, yf, yb, bh, fused and what.index == L)

    # the update strip
    lr = "" if trace.lr is None else f" (lr = {trace.lr:g})"
    norms = (",  gamma, beta likewise" if any(t.kind in ("BatchNorm", "LayerNorm")
                                               for t in layers) else "")
    _box(ax, width / 2, yu, width - 0.5, 0.42,
         [(f"update (the optimizer, not run by the trace): W[l] := W[l] - lr dW[l],  "
           f"b[l] := b[l] - lr db[l]{norms}{lr}", "black", False)], _GREY, face="#f6f6f6")
    return _save(fig, path)


def _layer_boxes(ax, t, xc, w, yf, yb, bh, fused_output):
    l = t.index
    ytop, ybot = yf - bh / 2, yb + bh / 2
    if t.kind == "Dense":
        act = t.layer.activation
        _box(ax, xc, yf, w, bh,
             [(f"Dense [{l}]  {act}", "black", True),
              (f"W[{l}] {_shape(t.W)}  b[{l}] {_shape(t.b)}", "black", False),
              (f"z[{l}] = a[{l - 1}] W[{l}] + b[{l}]", FORWARD, False),
              (f"a[{l}] = {act}(z[{l}])", FORWARD, False)], FORWARD)
        first = (f"dz[{l}] = (p - y)/n  (the loss)" if fused_output
                 else f"dz[{l}] = da[{l}] * {act}'(z[{l}])")
        _box(ax, xc, yb, w, bh,
             [(f"backward [{l}]", "black", True), (first, BACKWARD, False),
              (f"dW[{l}] = a[{l - 1}]^T dz[{l}]", BACKWARD, False),
              (f"db[{l}] = sum over samples of dz[{l}]", BACKWARD, False),
              (f"da[{l - 1}] = dz[{l}] W[{l}]^T", BACKWARD, False)], BACKWARD)
        cache = f"cache\na[{l - 1}], z[{l}]"
        grads = f"dW[{l}] |.|={_g(_norm(t.dW))}\ndb[{l}] |.|={_g(_norm(t.db))}"
        _arrow(ax, (xc, yb - bh / 2), (xc, 0.42 + 0.21), BACKWARD, 1.2)
        ax.text(xc + 0.06, (yb - bh / 2 + 0.63) / 2, grads, fontsize=7.5, color=BACKWARD,
                va="center", ha="left", linespacing=1.1)
    elif t.kind == "Activation":
        act = t.layer.activation
        _box(ax, xc, yf, w, bh,
             [(f"Activation [{l}]  {act}", "black", True), ("no parameters", _GREY, False),
              (f"z[{l}] = a[{l - 1}]", FORWARD, False),
              (f"a[{l}] = {act}(z[{l}])", FORWARD, False)], FORWARD)
        first = (f"dz[{l}] = (p - y)/n  (the loss)" if fused_output
                 else f"dz[{l}] = da[{l}] * {act}'(z[{l}])")
        _box(ax, xc, yb, w, bh,
             [(f"backward [{l}]", "black", True), (first, BACKWARD, False),
              (f"da[{l - 1}] = dz[{l}]", BACKWARD, False)], BACKWARD)
        cache = f"cache\nz[{l}], a[{l}]"
    elif t.kind in ("BatchNorm", "LayerNorm"):
        shape = _shape(t.gamma)
        if t.kind == "BatchNorm":
            lines = [(f"gamma, beta {shape}", "black", False),
                     (f"running mean, var {shape}", "black", False),
                     ("inference: running stats", _GREY, False)]
        else:
            lines = [(f"gamma, beta {shape}", "black", False),
                     (f"mean, var per row {_shape(t.mean)}", "black", False)]
        _box(ax, xc, yf, w, bh,
             [(f"{t.kind} [{l}]  eps {t.layer.eps:g}", "black", True)] + lines
             + [(f"x_hat[{l}] = (a[{l - 1}] - mean) / std", FORWARD, False),
                (f"a[{l}] = gamma x_hat[{l}] + beta", FORWARD, False)], FORWARD)
        _box(ax, xc, yb, w, bh,
             [(f"backward [{l}]", "black", True),
              (f"dgamma[{l}] = sum da[{l}] * x_hat[{l}]", BACKWARD, False),
              (f"dbeta[{l}] = sum over samples of da[{l}]", BACKWARD, False),
              (f"da[{l - 1}] = da[{l}] gamma / std" if t.kind == "BatchNorm"
               else f"da[{l - 1}]: through x_hat and the row stats", BACKWARD, False)],
             BACKWARD)
        cache = f"cache\nx_hat[{l}], 1/std"
        grads = (f"dgamma[{l}] |.|={_g(_norm(t.dgamma))}\n"
                 f"dbeta[{l}] |.|={_g(_norm(t.dbeta))}")
        _arrow(ax, (xc, yb - bh / 2), (xc, 0.42 + 0.21), BACKWARD, 1.2)
        ax.text(xc + 0.06, (yb - bh / 2 + 0.63) / 2, grads, fontsize=7.5, color=BACKWARD,
                va="center", ha="left", linespacing=1.1)
    else:
        _box(ax, xc, yf, w, bh,
             [(f"Dropout [{l}]  rate {t.layer.rate:g}", "black", True),
              ("inference mode (trace):", _GREY, False),
              (f"a[{l}] = a[{l - 1}]", FORWARD, False)], FORWARD)
        _box(ax, xc, yb, w, bh,
             [(f"backward [{l}]", "black", True),
              (f"da[{l - 1}] = da[{l}]", BACKWARD, False)], BACKWARD)
        cache = "cache\nmask (none)"
    _arrow(ax, (xc, ytop), (xc, ybot), _GREY, 1.0, dashed=True)
    ax.text(xc + 0.07, (ytop + ybot) / 2, cache, fontsize=7.5, color=_GREY, va="center",
            ha="left", linespacing=1.1)


# -- learning curves -------------------------------------------------------------------------------
def plot_history(history, path=None, metrics=None):
    """Learning curves of a training run: one panel per metric, training and validation.

    Parameters
    ----------
    history : fastprop.callbacks.History or dict of str to list of float
        What :meth:`Sequential.fit` returns (or its ``.history`` dict).
    path : str or path-like, optional
        Also write the figure there (.png, .svg, .pdf; the directory must exist).
    metrics : list of str, optional
        Base names to draw (``"loss"``, ``"accuracy"``, ...); each panel shows ``name`` and
        ``val_name`` where logged. Default: every logged metric but ``lr``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    h = getattr(history, "history", history)
    if not isinstance(h, dict):
        raise TypeError(f"history must be a fastprop History or a dict of lists, got "
                        f"{type(history).__name__}")
    bases = []
    for key in h:
        base = key[4:] if key.startswith("val_") else key
        if base != "lr" and base not in bases:
            bases.append(base)
    if metrics is not None:
        if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
            raise TypeError("metrics must be a list of metric names (str)")
        metrics = list(metrics)
        missing = [m for m in metrics if m not in bases]
        if missing:
            raise ValueError(f"metrics {missing} were not logged; the history has "
                             f"{', '.join(bases) or 'nothing'}")
        bases = metrics
    if not bases or not any(len(h.get(k, ())) for b in bases for k in (b, "val_" + b)):
        raise ValueError("history holds no epochs to plot")
    path = _check_path(path)
    fig = _figure(5 * len(bases), 4)
    from matplotlib.ticker import MaxNLocator
    axes = fig.subplots(1, len(bases), squeeze=False)[0]
    for ax, base in zip(axes, bases):
        for key in (base, "val_" + base):
            values = h.get(key)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, label=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(base)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
