"""Save and load a whole model -- architecture, weights, optimizer state, RNG -- without pickle.

File format (``FORMAT = "fastprop-model"``, ``FORMAT_VERSION = 2``; extension ``.fpz`` by
convention, any name accepted). The file is an ordinary ``.npz`` archive, i.e. a ZIP written by
:func:`numpy.savez` (stored, uncompressed), with exactly these members:

``header.npy``
    uint8, 1-D: a UTF-8 JSON object (at most ``MAX_HEADER_BYTES`` bytes)::

        {"format": "fastprop-model", "format_version": 2, "fastprop_version": "0.1.0",
         "config": {...model.get_config()...}, "dtype": "float32", "n_params": 1234, "t": 10,
         "arrays": {"params": {"dtype": "float32", "shape": [1234], "sha256": "<64 hex>"},
                    "state": {...}, "opt_exp_avg": {...}, "opt_exp_avg_sq": {...},
                    "rng":    {"dtype": "uint64", "shape": [...], "sha256": "<64 hex>"}}}

    ``t`` is the optimizer's step count; ``arrays`` lists every other member, with its dtype,
    shape and the SHA-256 of its little-endian, C-order bytes.
``params.npy``
    The model's flat parameter buffer, ``(n_params,)``, the model's dtype, little-endian.
``state.npy``
    The model's flat buffer of layer state (``model.state``: running statistics and the like,
    every layer's in order; ``(0,)`` for Dense / Dropout / Activation), the model's dtype.
    Version 2 on; a version 1 file (fastprop 0.1.0) has none and loads with an empty one.
``opt_<name>.npy``
    One per optimizer state array (``<name>`` is ``[A-Za-z0-9_]{1,64}``), the model's dtype.
``rng.npy``
    uint64: the dropout generator's state.

Writing is atomic: the archive goes to a temporary file in the destination's directory, is
flushed and fsync'ed, then renamed over the destination with :func:`os.replace`; on any failure
the temporary file is removed and an existing file at the destination is untouched. As editors
and databases do, a symlink is followed (its final target is replaced, the temporary file
beside it), and a directory or special file (FIFO, device, socket) is refused. Temporary files
are named ``.<name>.fastprop-tmp-<pid>-<16 hex>``; one left by a killed save is removed by the
next save to the same name once its process is gone. :func:`save` also writes to binary file
objects and :func:`to_bytes` returns the same bytes.

Reading never unpickles (``allow_pickle=False``) and validates everything before it returns a
model: only a regular file is opened (a FIFO or device is refused after ``os.stat``, and the
open is non-blocking); the file is a ZIP with exactly the expected members, each lying within
the file (a stored member's sizes agree, a deflated one claims no more than deflate can
expand); the header is a JSON object (at most ``MAX_HEADER_BYTES``, nested at most 32 deep,
checked before parsing) with exactly the expected fields; format and version match; every
member's declared size, ``.npy`` dtype and shape agree with the header *before* anything is
read or allocated (a member claiming more bytes than the header allows -- a zip bomb -- is
refused unread); the arrays and the model they make fit in the memory available; every
width in the config is bounded by ``n_params`` (a Dense layer's weights summed over the
model, any other integer) before any layer is built; the config builds a model
(:meth:`Sequential.from_config`; a layer kind not in the registry is refused) whose parameter
count, state buffer and optimizer / RNG layout match the arrays; checksums match; parameters and optimizer state are finite; ``0 <= t <= 2**53``.
Any failure raises ``ValueError`` naming the file and the problem (``FileNotFoundError`` for
a missing file); no partly restored model is ever returned.

The checksums (and the ZIP's CRC-32s) detect damage, not malice: they are no signature, and a
deliberately edited file that is still consistent loads. Never loading pickle is what makes
an untrusted file safe to open.
"""
import contextlib
import hashlib
import io as _io
import json
import math
import os
import re
import stat
import zipfile
import zlib

import numpy as np
from numpy.lib import format as _npy

from fastprop import _validation as V
from fastprop._files import atomic_target, atomic_write, file_kind
from fastprop._version import __version__
from fastprop.layers._base import LAYERS

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_HEADER_BYTES", "save", "load", "to_bytes",
           "from_bytes"]

FORMAT = "fastprop-model"
FORMAT_VERSION = 2
# the model class load builds from a config: fastprop.model registers Sequential at import, so
# that this module imports nothing above it (model imports io, never the reverse)
_MODEL_CLASS = []


def register_model_class(cls):
    """The class :func:`load` builds models with (``cls.from_config``); set by fastprop.model."""
    _MODEL_CLASS[:] = [cls]
    return cls
MAX_HEADER_BYTES = 8 * 2**20  # the JSON header; ~100 bytes per layer, so ~80k layers

_HEADER_KEYS = frozenset({"format", "format_version", "fastprop_version", "config", "dtype",
                          "n_params", "t", "arrays"})
_ARRAY_KEYS = frozenset({"dtype", "shape", "sha256"})
_STATE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_MODEL_DTYPES = ("float32", "float64")
_T_MAX = 2**53  # exact in float64; so far below 2**63 that counting on cannot overflow
_MAX_JSON_DEPTH = 32  # a saved header nests 5 deep
_CHUNK = 16 * 2**20
# deflate expands at most 1032-fold; a member declaring more is a bomb or a lie
_DEFLATE_MAX_RATIO = 1032
_MAX_NPY_HEADER = 10000  # numpy's own default limit on a .npy header


# -- public API ------------------------------------------------------------------------------
def save(model, path):
    """Write ``model`` to ``path`` atomically, in the fastprop model format (no pickle).

    Parameters
    ----------
    model : Sequential
        The model: its config, flat parameters, optimizer state and step count, and dropout
        RNG state are saved.
    path : str, os.PathLike or binary file object
        Destination; ``.fpz`` by convention, any name accepted (nothing is appended). An
        existing file is replaced only once the new one is completely on disk, and keeps its
        permission bits. A symbolic link is followed: its final target is replaced
        (atomically, through a temporary file beside the target) and the link is kept. A
        binary file object (anything with ``write``: an open file, :class:`io.BytesIO`, a
        socket file) receives the bytes of :func:`to_bytes` at its current position, in one
        go once the whole file is encoded; it is flushed, not closed.

    Raises
    ------
    TypeError
        If ``path`` is neither a path nor a binary file object, or the model does not provide
        the state interface.
    ValueError
        If ``path`` is empty, a directory, or an existing special file (FIFO, device,
        socket), or the model's state cannot be saved faithfully (for instance NaN / inf
        parameters: the file would not load).
    OSError
        If the destination directory is missing or not writable. Nothing is left behind.

    Notes
    -----
    The temporary file is ``.<name>.fastprop-tmp-<pid>-<random>`` in the target's directory;
    it is removed on any exception. A process killed while saving leaves it behind; the next
    save to the same name removes such leftovers whose process no longer runs (POSIX).

    See Also
    --------
    load, to_bytes
    """
    if _is_stream(path, "write"):
        _write_stream(path, to_bytes(model))
        return
    path = _as_path(path)
    target = atomic_target(path, "model")
    header, members = _collect(model)
    atomic_write(target, lambda f: _write(f, header, members), path, "model")


def load(path):
    """Read a model written by :func:`save`, validating every field first.

    Parameters
    ----------
    path : str, os.PathLike, binary file object, or bytes-like
        A path to a regular file; or an object with ``read`` returning bytes (read from its
        current position to the end, not closed); or the file's contents as ``bytes``,
        ``bytearray`` or ``memoryview`` (as :func:`from_bytes`).

    Returns
    -------
    model : Sequential
        A new model with the saved architecture, parameters, optimizer state (including the
        step count) and dropout RNG state: its predictions and further training are identical
        to those of the saved model.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is empty, a directory or another non-regular file (FIFO, device, socket:
        refused without opening or blocking), or not a fastprop model file (empty, not a
        ZIP, a ``.npy``, another archive), or is truncated, corrupted or tampered with, or
        needs more memory than is available, or was written by a newer format version. The
        message names the file and what is wrong.
    TypeError
        If ``path`` is not a path, a binary file object or bytes (a text-mode file, say).

    Notes
    -----
    Nothing is allocated before its size is checked: the header is bounded in bytes and in
    JSON nesting depth; every array's shape in the header must agree with the archive's own
    member sizes and ``.npy`` headers, fit in the archive, and fit (with the model built from
    it) in the memory available; every width in the architecture must agree with the
    parameter count before any layer is built.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        try:
            return from_bytes(path)
        except ValueError as exc:
            if len(path) < 4096 and bytes(path[:2]) != b"PK" and os.path.isfile(bytes(path)):
                raise ValueError(f"{exc}; bytes are read as the contents of a model file: to "
                                 f"load the file named {os.fsdecode(bytes(path))!r}, pass "
                                 f"the name as a str") from None
            raise
    if _is_stream(path, "read"):
        return _read(_io.BytesIO(_read_stream(path)), "cannot load model from file object "
                                                        f"{_describe(path)}")
    path = _as_path(path)
    where = f"cannot load model from {path!r}"
    if not path:
        raise ValueError("path must not be empty")
    with _open_regular(path, where) as f:
        return _read(f, where)


def to_bytes(model):
    """Serialize ``model`` to bytes: exactly the contents :func:`save` writes to a file.

    Parameters
    ----------
    model : Sequential

    Returns
    -------
    data : bytes
        A complete model file; :func:`from_bytes` (or :func:`load`) reads it back.
    """
    header, members = _collect(model)
    buf = _io.BytesIO()
    _write(buf, header, members)
    return buf.getvalue()


def from_bytes(data):
    """Rebuild a model from :func:`to_bytes` output, with the same validation as :func:`load`.

    Parameters
    ----------
    data : bytes, bytearray or memoryview

    Returns
    -------
    model : Sequential

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like.
    ValueError
        If ``data`` is not a complete, undamaged fastprop model file.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return _read(_io.BytesIO(bytes(data)), "cannot load model from bytes")


# -- writing ---------------------------------------------------------------------------------
def _as_path(path):
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, os.PathLike or binary file object, got "
                        f"{type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def _is_stream(obj, method):
    """True for a file object with ``method``; TypeError for a text-mode one."""
    if isinstance(obj, (str, bytes, os.PathLike)) or not callable(getattr(obj, method, None)):
        return False
    if isinstance(obj, _io.TextIOBase):
        raise TypeError(f"path is a text-mode file object ({_describe(obj)}): open it in "
                        f"binary mode ('{method[0]}b')")
    return True


def _describe(f):
    name = getattr(f, "name", None)
    return repr(name) if isinstance(name, (str, bytes)) else type(f).__name__


def _write_stream(f, data):
    """Write all of ``data`` to the file object ``f`` (handles short writes) and flush it."""
    view = memoryview(data)
    while view:
        n = f.write(view)
        if n is None:
            if isinstance(f, _io.RawIOBase):  # a non-blocking raw stream that would block
                raise BlockingIOError(f"cannot save model: {_describe(f)} would block")
            break  # file objects that do not report a count wrote everything
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(view):
            raise OSError(f"cannot save model: {_describe(f)}.write returned {n!r}")
        view = view[n:]
    flush = getattr(f, "flush", None)
    if callable(flush):
        flush()


def _read_stream(f):
    """All bytes from the file object ``f``, in chunks, bounded by the memory available."""
    where = f"cannot load model from file object {_describe(f)}"
    chunks, total = [], 0
    while True:
        chunk = f.read(_CHUNK)
        if chunk is None:
            raise BlockingIOError(f"{where}: the stream would block")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"{where}: read() returned {type(chunk).__name__}, not bytes: "
                            f"open it in binary mode ('rb')")
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        try:
            V.check_alloc(2 * total, 1, "the stream's contents")
        except ValueError as exc:
            raise _fail(where, str(exc)) from None
        chunks.append(bytes(chunk))


def _le(dtype_name):
    """The little-endian dtype stored on disk for ``dtype_name``."""
    return np.dtype(dtype_name).newbyteorder("<")


def _sha256(arr):
    return hashlib.sha256(memoryview(np.ascontiguousarray(arr)).cast("B")).hexdigest()


def _check_registered(model, config):
    """ValueError naming the first layer whose kind ``load`` could not find by name: the
    class registered under the config's ``type`` must be the layer's own (a custom layer is
    saved only once ``fastprop.register_layer`` knows it)."""
    specs = config.get("layers")
    if not isinstance(specs, list):
        return
    for i, (layer, spec) in enumerate(zip(getattr(model, "layers", ()), specs)):
        cls = type(layer)
        name = spec.get("type") if isinstance(spec, dict) else None
        if LAYERS.get(name) is not cls:
            raise ValueError(f"cannot save model: layers[{i}] is a {cls.__name__}, a layer kind "
                             f"that is not registered under the name its get_config gives "
                             f"({name!r}), so load could not rebuild it: call "
                             f"fastprop.register_layer({cls.__name__}) (or decorate the class "
                             f"with it) first")


def _collect(model):
    """Take the model's state through its public interface; return (header, members)."""
    try:
        config = model.get_config()
        params = model.params
        opt_arrays, t = model.optimizer.get_state()
        rng = model.get_rng_state()
    except AttributeError as exc:
        raise TypeError(f"model must be a fastprop Sequential, got {type(model).__name__} "
                        f"({exc})") from None
    if not isinstance(config, dict):
        raise TypeError(f"model.get_config() must return a dict, got {type(config).__name__}")
    _check_registered(model, config)
    dtype = config.get("dtype")
    if dtype not in _MODEL_DTYPES:
        raise ValueError(f"model config has dtype {dtype!r}, expected 'float32' or 'float64'")
    if not isinstance(opt_arrays, dict):
        raise TypeError("optimizer.get_state() must return (dict of arrays, t)")

    members = {}

    def add(name, arr, want, finite):
        arr = np.asarray(arr)
        if arr.dtype != np.dtype(want):
            raise ValueError(f"cannot save model: {name} has dtype {arr.dtype}, expected {want}")
        if finite and not np.isfinite(arr).all():
            raise ValueError(f"cannot save model: {name} contains NaN or infinity (the file "
                             f"would not load)")
        # a copy: the checksum and the bytes written must agree even if training continues
        members[name] = np.array(arr, dtype=_le(want), order="C", copy=True)

    add("params", params, dtype, True)
    if members["params"].ndim != 1:
        raise ValueError(f"cannot save model: params must be 1-D, got shape "
                         f"{members['params'].shape}")
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
        raise TypeError(f"cannot save model: optimizer step count t must be an integer, got "
                        f"{type(t).__name__}")
    for name, arr in opt_arrays.items():
        if not isinstance(name, str) or not _STATE_NAME.match(name):
            raise ValueError(f"cannot save model: optimizer state name {name!r} must match "
                             f"[A-Za-z0-9_]{{1,64}}")
        add(f"opt_{name}", arr, dtype, True)
    add("rng", rng, "uint64", False)
    state = getattr(model, "state", None)
    add("state", np.zeros(0, dtype) if state is None else state, dtype, True)
    if members["state"].ndim != 1:
        raise ValueError(f"cannot save model: state must be 1-D, got shape "
                         f"{members['state'].shape}")

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastprop_version": __version__,
        "config": config,
        "dtype": dtype,
        "n_params": int(members["params"].size),
        "t": int(t),
        "arrays": {name: {"dtype": np.dtype(a.dtype.name).name, "shape": list(a.shape),
                          "sha256": _sha256(a)} for name, a in members.items()},
    }
    # what load would say about this header, said now: every file save writes can be loaded
    _check_header(header, "cannot save model")
    return header, members


def _write(f, header, members):
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot save model: its config is not JSON-serialisable ({exc})") from None
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if raw.size > MAX_HEADER_BYTES:
        raise ValueError(f"cannot save model: header is {raw.size} bytes, more than "
                         f"{MAX_HEADER_BYTES}")
    # no allow_pickle argument: NumPy < 2.1 would store it as one more array; the arrays here
    # are plain numbers, which np.save never pickles, and load reads with allow_pickle=False
    np.savez(f, header=raw, **members)


# -- reading ---------------------------------------------------------------------------------
def _exact_keys(found, expected, where, missing_msg, extra_msg):
    """Raise _fail unless the key set ``found`` is exactly ``expected``."""
    missing = sorted(set(expected) - set(found))
    if missing:
        raise _fail(where, f"{missing_msg} {missing}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise _fail(where, f"{extra_msg} {extra[:10]}")


def _fail(where, what):
    """A ValueError ``"<where>: <what>"``, marked as already carrying its context."""
    exc = ValueError(f"{where}: {what}")
    exc._fastprop_io = True
    return exc


# What reading a damaged archive makes zipfile / zlib / numpy raise.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
           NotImplementedError, KeyError, OverflowError, UnicodeError, ValueError)


@contextlib.contextmanager
def _reading(where):
    """Turn what a damaged archive makes the readers raise into ValueError naming ``where``.

    Used around archive access only, so bugs elsewhere are not disguised as damage.
    """
    try:
        yield
    except _DAMAGE as exc:
        if getattr(exc, "_fastprop_io", False):
            raise
        raise _fail(where, f"the file is truncated or corrupted "
                           f"({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def _open_regular(path, where):
    """Open ``path`` for reading only if it is a regular file, never blocking on a FIFO.

    ``os.stat`` first, so a device or FIFO is refused without being opened; then the open is
    non-blocking and the opened descriptor checked again (the path may have been swapped).
    """
    st = os.stat(path)  # FileNotFoundError for a missing file, as open would raise
    if not stat.S_ISREG(st.st_mode):
        raise _fail(where, file_kind(st.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(
        os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _fail(where, file_kind(mode))
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def _read(f, where):
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    head = f.read(8)
    f.seek(0)
    if not head:
        raise _fail(where, "the file is empty")
    if head.startswith(_npy.MAGIC_PREFIX):
        raise _fail(where, "it is a single .npy array, not a fastprop model archive")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        what = "not a ZIP archive" + (", or truncated" if head.startswith(b"PK") else "")
        raise _fail(where, f"not a fastprop model file ({what})")
    with _reading(where):
        npz = np.load(f, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):  # cannot happen after the sniffing above
        raise _fail(where, "not a fastprop model archive")
    with npz:
        return _read_archive(npz, where, size)


def _read_archive(npz, where, size):
    zf = npz.zip
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(names) != len(set(names)):
        raise _fail(where, "the archive has duplicate member names")
    infos = {i.filename: i for i in infos}
    if "header.npy" not in infos:
        raise _fail(where, "no header.npy member: not a fastprop model file "
                           f"(members: {sorted(names)[:10]})")
    for info in infos.values():
        if info.flag_bits & 0x1:
            raise _fail(where, f"member {info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(where, f"member {info.filename} uses an unsupported compression method")
        # the sizes the directory declares must fit in the archive, before anything is read
        if info.header_offset + info.compress_size > size:
            raise _fail(where, f"member {info.filename} extends past the end of the file "
                               f"({size} bytes): the file is truncated or corrupted")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _fail(where, f"member {info.filename} is stored uncompressed but declares "
                               f"{info.file_size} bytes in {info.compress_size}")
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
            raise _fail(where, f"member {info.filename} declares {info.file_size} bytes "
                               f"from {info.compress_size} compressed, more than deflate can "
                               f"expand: refusing to decompress it")

    # 1. the header, bounded before it is read
    with _reading(where):
        _check_member(zf, infos["header.npy"], "|u1", None, where, MAX_HEADER_BYTES)
        raw = npz["header.npy"]
    try:
        text = raw.tobytes().decode("utf-8")
        depth = _json_depth(text)
        if depth > _MAX_JSON_DEPTH:
            raise _fail(where, f"header nests {depth} levels deep, more than "
                               f"{_MAX_JSON_DEPTH}: not a fastprop header")
        header = json.loads(text, object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise _fail(where, "header is not valid UTF-8") from None
    except RecursionError:  # cannot happen below the depth limit; never let it escape
        raise _fail(where, "header nests too deep") from None
    except ValueError as exc:
        if getattr(exc, "_fastprop_io", False):
            raise
        raise _fail(where, f"header is not valid JSON ({exc})") from None
    _check_header(header, where)

    # 2. exactly the members the header lists, each of exactly the size it implies
    expected = {f"{name}.npy" for name in header["arrays"]} | {"header.npy"}
    _exact_keys(infos.keys(), expected, where, "missing member(s)", "unexpected member(s)")
    with _reading(where):
        for name, spec in header["arrays"].items():
            _check_member(zf, infos[f"{name}.npy"], _le(spec["dtype"]).str,
                          tuple(spec["shape"]), where)

    # 3. a fresh model from the config, whose layout must match the arrays; its widths are
    # checked against n_params, and everything load will hold against the memory available,
    # before any layer is built
    _check_config_sizes(header["config"], header["n_params"], where)
    itemsize = np.dtype(header["dtype"]).itemsize
    total = sum(math.prod(a["shape"]) * np.dtype(a["dtype"]).itemsize
                for a in header["arrays"].values())
    try:  # the arrays as read, the model's copy of them, and its gradient buffer
        V.check_alloc(2 * total + header["n_params"] * itemsize, 1, "loading this model")
    except ValueError as exc:
        raise _fail(where, str(exc)) from None
    model = _build(header, where)

    # 4. the arrays: checksums and finiteness
    dtype = np.dtype(header["dtype"])
    arrays = {}
    for name, spec in header["arrays"].items():
        with _reading(where):
            arr = npz[f"{name}.npy"]
        if _sha256(arr) != spec["sha256"]:
            raise _fail(where, f"{name} checksum mismatch: the file is corrupted or was "
                               f"modified")
        if name != "rng" and not np.isfinite(arr).all():
            raise _fail(where, f"{name} contains NaN or infinity")
        arrays[name] = arr.astype(np.uint64 if name == "rng" else dtype, copy=False)

    # 5. restore the state; the model is returned only if all of it was accepted
    opt = {name[4:]: a for name, a in arrays.items() if name.startswith("opt_")}
    try:
        model.params[...] = arrays["params"]
        if opt or header["t"]:  # else: a fresh optimizer, nothing to restore
            model.optimizer.set_state(opt, header["t"])
        model.set_rng_state(arrays["rng"])
        if "state" in arrays:
            model.state[...] = arrays["state"]
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"the model rejected the saved state ({exc})") from None
    return model


def _json_depth(text):
    """The deepest nesting of ``[`` / ``{`` in the JSON ``text``, strings skipped; linear time
    (NumPy passes, no regex backtracking, no parse)."""
    c = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    if c.size == 0:
        return 0
    idx = np.arange(c.size, dtype=np.int64)
    # a character is escaped when an odd run of backslashes ends just before it
    last_plain = np.maximum.accumulate(np.where(c != ord("\\"), idx, -1))
    run = np.empty_like(idx)
    run[0] = 0
    run[1:] = idx[:-1] - last_plain[:-1]
    quote = (c == ord('"')) & (run % 2 == 0)
    outside = np.cumsum(quote) % 2 == 0  # an unescaped quote opens or closes a string
    step = (((c == ord("[")) | (c == ord("{"))).astype(np.int8)
            - ((c == ord("]")) | (c == ord("}"))).astype(np.int8)) * outside
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


def _check_config_sizes(config, n_params, where):
    """Every width a layer config declares must fit the saved parameter count, checked on
    the JSON before any layer exists: a Dense's ``n_in * n_out`` weights summed over the
    model, and every other integer in a layer's config, are at most ``n_params``. The exact
    layout is compared once the (then bounded) model is built."""
    layers = config.get("layers")
    if not isinstance(layers, list):
        return  # from_config refuses it, allocating nothing
    weights = 0
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict):
            continue
        for key, value in spec.items():
            if _is_int(value) and key != "seed" and value > n_params:
                raise _fail(where, f"config['layers'][{i}][{key!r}] is {value}, more than "
                                   f"the file's n_params ({n_params})")
        n_in, n_out = spec.get("n_in"), spec.get("n_out")
        if _is_int(n_in) and _is_int(n_out):      # Dense and any kind declaring both
            weights += max(n_in, 0) * max(n_out, 0)
            if weights > n_params:
                raise _fail(where, f"the architecture has at least {weights} weights by "
                                   f"config['layers'][{i}], more than the "
                                   f"file's n_params ({n_params})")


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def _check_member(zf, info, descr, shape, where, max_bytes=None):
    """Check a member's .npy header against what is expected, reading only that header.

    The member's declared uncompressed size must be exactly its .npy header plus the data the
    expected ``shape`` and ``descr`` imply, so nothing larger is ever decompressed or allocated.
    ``shape=None`` accepts any 1-D shape whose data fits in ``max_bytes``.
    """
    name = info.filename
    item = np.dtype(descr).itemsize
    # the declared size, before anything is decompressed
    limit = _MAX_NPY_HEADER + 16 + (max_bytes if shape is None else math.prod(shape) * item)
    if info.file_size > limit:
        raise _fail(where, f"member {name} declares {info.file_size} bytes uncompressed, "
                           f"more than its shape in the header allows ({limit} at most): "
                           f"refusing to decompress it")
    with zf.open(info) as m:
        try:
            version = _npy.read_magic(m)
            if version == (1, 0):
                got_shape, fortran, got_dtype = _npy.read_array_header_1_0(m)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = _npy.read_array_header_2_0(m)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise  # damage the archive reader found (a CRC, say): the caller's _reading
        except Exception as exc:  # noqa: BLE001 - numpy parses the header with ast and
            # tokenize (SyntaxError, tokenize.TokenError, ...); read before the CRC is checked
            raise _fail(where, f"member {name} is not a valid .npy array "
                               f"({type(exc).__name__}: {exc})") from None
        offset = m.tell()
    if got_dtype.str != descr or got_dtype.hasobject:
        raise _fail(where, f"member {name} has dtype {got_dtype.str!r}, expected {descr!r}")
    if fortran and len(got_shape) > 1:
        raise _fail(where, f"member {name} is Fortran-ordered, expected C order")
    if shape is None:
        if len(got_shape) != 1 or got_shape[0] * item > max_bytes:
            raise _fail(where, f"member {name} has shape {got_shape}, expected 1-D of at most "
                               f"{max_bytes} bytes")
    elif tuple(got_shape) != shape:
        raise _fail(where, f"member {name} has shape {got_shape}, header says {shape}")
    nbytes = math.prod(got_shape) * item
    if info.file_size != offset + nbytes:
        raise _fail(where, f"member {name} is {info.file_size} bytes, expected "
                           f"{offset + nbytes} for shape {tuple(got_shape)}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_header(h, where):
    """Validate the decoded header's structure and types (not yet against a model)."""
    if not isinstance(h, dict):
        raise _fail(where, f"header must be a JSON object, got {type(h).__name__}")
    if h.get("format") != FORMAT:
        raise _fail(where, f"not a fastprop model file (format is {h.get('format')!r}, "
                           f"expected {FORMAT!r})")
    version = h.get("format_version")
    if not _is_int(version) or version < 1:
        raise _fail(where, f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(where, f"the file has format version {version}, newer than this fastprop "
                           f"({__version__}) reads (up to {FORMAT_VERSION}): upgrade fastprop "
                           f"(written by fastprop {h.get('fastprop_version')!r})")
    _exact_keys(h.keys(), _HEADER_KEYS, where, "header lacks field(s)",
                "header has unexpected field(s)")
    if not isinstance(h["fastprop_version"], str) or len(h["fastprop_version"]) > 64:
        raise _fail(where, "fastprop_version must be a short string")
    if not isinstance(h["config"], dict):
        raise _fail(where, f"config must be a JSON object, got {type(h['config']).__name__}")
    dtype = h["dtype"]
    if dtype not in _MODEL_DTYPES:
        raise _fail(where, f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if h["config"].get("dtype") != dtype:
        raise _fail(where, f"config dtype {h['config'].get('dtype')!r} differs from the "
                           f"header's dtype {dtype!r}")
    n_params = h["n_params"]
    if not _is_int(n_params) or n_params < 1:
        raise _fail(where, f"n_params must be a positive integer, got {n_params!r}")
    t = h["t"]
    if not _is_int(t) or not 0 <= t <= _T_MAX:
        raise _fail(where, f"t (the optimizer step count) must be an integer in [0, 2**53], "
                           f"got {t!r}")

    arrays = h["arrays"]
    if not isinstance(arrays, dict):
        raise _fail(where, "arrays must be a JSON object")
    for name in ("params", "rng"):
        if name not in arrays:
            raise _fail(where, f"arrays lacks {name!r}")
    total = 0
    for name, spec in arrays.items():
        if name == "params":
            want = dtype
        elif name == "rng":
            want = "uint64"
        elif name == "state" and version >= 2:
            want = dtype
        elif name.startswith("opt_") and _STATE_NAME.match(name[4:]):
            want = dtype
        else:
            raise _fail(where, f"unexpected array name {name!r}")
        if not isinstance(spec, dict) or spec.keys() != _ARRAY_KEYS:
            raise _fail(where, f"arrays[{name!r}] must have exactly the fields "
                               f"{sorted(_ARRAY_KEYS)}")
        if spec["dtype"] != want:
            raise _fail(where, f"{name} has dtype {spec['dtype']!r}, expected {want!r}")
        shape = spec["shape"]
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(_is_int(d) and d >= 0 for d in shape)):
            raise _fail(where, f"{name} shape must be a list of at most 8 non-negative "
                               f"integers, got {shape!r}")
        if math.prod(shape) > 2**62 // 8:
            raise _fail(where, f"{name} shape {shape} is absurdly large")
        if not isinstance(spec["sha256"], str) or not _SHA256.match(spec["sha256"]):
            raise _fail(where, f"{name} sha256 must be 64 lowercase hex digits")
        size = math.prod(shape)
        total += size * np.dtype(want).itemsize
        try:
            V.check_alloc(size, np.dtype(want).itemsize, name)
        except ValueError as exc:
            raise _fail(where, str(exc)) from None
    if arrays["params"]["shape"] != [n_params]:
        raise _fail(where, f"params shape {arrays['params']['shape']} does not match "
                           f"n_params {n_params}")
    if len(arrays["rng"]["shape"]) != 1:
        raise _fail(where, f"rng must be 1-D, got shape {arrays['rng']['shape']}")
    if version >= 2 and "state" not in arrays:
        raise _fail(where, "arrays lacks 'state' (format version 2 on)")
    if "state" in arrays and len(arrays["state"]["shape"]) != 1:
        raise _fail(where, f"state must be 1-D, got shape {arrays['state']['shape']}")
    try:
        V.check_alloc(total, 1, "the model's arrays")
    except ValueError as exc:
        raise _fail(where, str(exc)) from None


def _build(header, where):
    """A fresh model from the header's config; its layout must match the saved arrays."""
    try:
        model = _MODEL_CLASS[0].from_config(header["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise _fail(where, f"invalid model config ({type(exc).__name__}: {exc})") from None
    if not getattr(model, "built", True):     # a layer width left to infer: no file has it
        raise _fail(where, "invalid model config (a layer's input width is missing)")
    arrays = header["arrays"]
    if model.params.dtype != np.dtype(header["dtype"]):
        raise _fail(where, f"config builds a {model.params.dtype} model, header says "
                           f"{header['dtype']}")
    if model.params.size != header["n_params"]:
        raise _fail(where, f"n_params is {header['n_params']} but the architecture has "
                           f"{model.params.size} parameters")
    state, _ = model.optimizer.get_state()
    got = {k: v["shape"] for k, v in arrays.items() if k.startswith("opt_")}
    if state:
        want = {f"opt_{k}": list(np.shape(v)) for k, v in state.items()}
    else:  # an optimizer that allocates its state lazily: flat arrays, one value per parameter
        want = {k: [header["n_params"]] for k in got}
    if want != got:
        raise _fail(where, f"optimizer state {got} does not match the optimizer's layout "
                           f"{want}")
    state_shape = list(np.shape(model.state))
    if arrays.get("state", {"shape": [0]})["shape"] != state_shape:
        raise _fail(where, f"the state buffer has shape {arrays['state']['shape']}, but the "
                           f"architecture's is {state_shape}")
    rng_shape = list(np.shape(model.get_rng_state()))
    if arrays["rng"]["shape"] != rng_shape:
        raise _fail(where, f"rng shape {arrays['rng']['shape']} does not match the model's "
                           f"{rng_shape}")
    return model
